"""`make bench`: every benchmark, each beside its baseline in the same run.

`python -m benchmarks [--quick]`; results are printed and written under benchmarks/results/.
"""

from __future__ import annotations

import sys

from benchmarks import (
    bench_backscan,
    bench_decide,
    bench_detect,
    bench_events,
    bench_exchange_sync,
    bench_flood,
    bench_hashing,
    bench_identity,
    bench_import,
    bench_index,
    bench_match,
    bench_psi,
    bench_server,
    bench_stream,
    bench_text,
)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    modules = (
        bench_index,
        bench_hashing,
        bench_match,
        bench_import,
        bench_exchange_sync,
        bench_server,
        bench_decide,
        bench_events,
        bench_stream,
        bench_detect,
        bench_psi,
        bench_flood,
        bench_identity,
        bench_backscan,
        bench_text,
    )
    for module in modules:
        print(f"\n## {module.__name__}\n", flush=True)
        code = module.main(args)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
