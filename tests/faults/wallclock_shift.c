/* LD_PRELOAD shim for the fault matrix's clock row: the wall clock (CLOCK_REALTIME, through
 * clock_gettime, gettimeofday and time) shifted by the seconds written in the file named by
 * $WALLCLOCK_SHIFT_FILE, re-read at most every 20 ms; every other clock, CLOCK_MONOTONIC
 * above all, untouched. Changing the number is what an NTP step or `date -s` does to the
 * process, without touching the machine's clock.
 *
 * Not libfaketime: Debian 12's 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 hands
 * clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) a negative time, so Python 3.11's
 * time.sleep fails with EINVAL (wolfcw/libfaketime#426). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static _Atomic(clock_gettime_fn) real_clock_gettime;
static _Atomic long long shift_ns;
static _Atomic long long next_read_ns;

static clock_gettime_fn real(void) {
    clock_gettime_fn fn = atomic_load(&real_clock_gettime);
    if (fn == NULL) {
        fn = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
        atomic_store(&real_clock_gettime, fn);
    }
    return fn;
}

static long long shift(void) {
    struct timespec now;
    real()(CLOCK_MONOTONIC, &now);
    long long mono = now.tv_sec * 1000000000LL + now.tv_nsec;
    if (mono >= atomic_load(&next_read_ns)) {
        atomic_store(&next_read_ns, mono + 20000000LL);
        const char *path = getenv("WALLCLOCK_SHIFT_FILE");
        int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        if (fd >= 0) {
            char text[64];
            ssize_t got = read(fd, text, sizeof text - 1);
            close(fd);
            if (got > 0) {
                text[got] = '\0';
                char *end;
                double seconds = strtod(text, &end);
                if (end != text)
                    atomic_store(&shift_ns, (long long)(seconds * 1e9));
            }
        }
    }
    return atomic_load(&shift_ns);
}

static void add_shift(struct timespec *ts) {
    long long total = ts->tv_sec * 1000000000LL + ts->tv_nsec + shift();
    ts->tv_sec = total / 1000000000LL;
    ts->tv_nsec = total % 1000000000LL;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    int result = real()(clock, ts);
    if (result == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE))
        add_shift(ts);
    return result;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    struct timespec ts;
    (void)tz;
    if (real()(CLOCK_REALTIME, &ts) != 0)
        return -1;
    add_shift(&ts);
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    real()(CLOCK_REALTIME, &ts);
    add_shift(&ts);
    if (out != NULL)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
