"""Where memory grew between two tracemalloc snapshots (see tracemalloc_hook/sitecustomize.py).

.venv/bin/python benchmarks/tracemalloc_diff.py EARLIER.pickle LATER.pickle [--top 15]
"""

import argparse
import tracemalloc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("earlier")
    parser.add_argument("later")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    ignore = [tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__)]
    earlier = tracemalloc.Snapshot.load(args.earlier).filter_traces(ignore)
    later = tracemalloc.Snapshot.load(args.later).filter_traces(ignore)
    stats = later.compare_to(earlier, "lineno")
    print(f"traced growth: {sum(s.size_diff for s in stats) / 1e3:+.1f} kB")
    for stat in stats[: args.top]:
        print(stat)


if __name__ == "__main__":
    main()
