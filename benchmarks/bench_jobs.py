"""Wall time of `keras-lth bench --jobs N` for several N, on this machine.

Runs the same benchmark command once per `--jobs` value and repeat, each
into a fresh directory, alternating the order (1 2, 2 1, ...) so that a
change of background load hits every N alike. Records per run the wall
time, the CPU time of the benchmark and its workers, and the load averages
before and after; checks that every run's summary is the same apart from
its command line and timing blocks (`keras_lth.bench.report.comparable`),
i.e. that `--jobs` changed the speed only. Writes OUT/bench_jobs.json and
one log per run under OUT/logs/.

Usage (under `nice -n 10` on a shared machine):

```
python benchmarks/bench_jobs.py --out docs/results/bench_jobs   # about 20 minutes on 2 cores
python benchmarks/bench_jobs.py --methods dense --seeds 1 --repeats 1 --out /tmp/bj  # smoke run
```
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # this checkout's keras_lth, here and in the benchmark


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", default="1,2", help="comma-separated --jobs values")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--methods", default="dense,oneshot,lth,lth-reinit,random-mask,gradual,tfmot")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--preset", default="quick")
    p.add_argument("--out", required=True, help="directory for bench_jobs.json and logs/")
    args = p.parse_args(argv)
    jobs = [int(j) for j in args.jobs.split(",")]
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    bench = ["--preset", args.preset, "--methods", args.methods, "--seeds", str(args.seeds)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}
    runs, summaries = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for j in jobs if r % 2 == 0 else jobs[::-1]:
                out = os.path.join(tmp, f"jobs{j}-repeat{r}")
                cmd = [sys.executable, "-m", "keras_lth.bench", *bench, "--jobs", str(j)]
                log = os.path.join(args.out, "logs", f"jobs{j}-repeat{r}.log")
                before, cpu0 = os.getloadavg(), _children_cpu()
                start = time.perf_counter()
                with open(log, "w") as f:
                    f.write(f"$ keras-lth bench {' '.join(bench)} --jobs {j} --out DIR\n")
                    f.write(f"load average before: {before}\n")
                    f.flush()
                    code = subprocess.call(
                        [*cmd, "--out", out], stdout=f, stderr=subprocess.STDOUT, env=env
                    )
                wall = time.perf_counter() - start
                after, cpu = os.getloadavg(), _children_cpu() - cpu0
                if code:
                    raise SystemExit(f"the benchmark failed (exit status {code}): see {log}")
                with open(log, "a") as f:
                    f.write(f"load average after: {after}\nwall {wall:.1f} s, cpu {cpu:.1f} s\n")
                with open(os.path.join(out, "summary.md")) as f:
                    summaries[j, r] = f.read()
                runs.append(
                    {
                        "jobs": j,
                        "repeat": r,
                        "wall_s": round(wall, 1),
                        "cpu_s": round(cpu, 1),
                        "load_before": [round(v, 2) for v in before],
                        "load_after": [round(v, 2) for v in after],
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
    from keras_lth.bench.report import comparable
    from keras_lth.bench.workers import cores

    wall = {j: statistics.median(x["wall_s"] for x in runs if x["jobs"] == j) for j in jobs}
    result = {
        "command": f"keras-lth bench {' '.join(bench)} --jobs N --out DIR",
        "script": "python benchmarks/bench_jobs.py " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cores": cores(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "runs": runs,
        "median_wall_s": {str(j): w for j, w in wall.items()},
        "speedup_vs_jobs_1": {str(j): round(wall[jobs[0]] / w, 3) for j, w in wall.items()},
        "paired_speedups": {
            str(j): [
                round(_wall(runs, jobs[0], r) / _wall(runs, j, r), 3) for r in range(args.repeats)
            ]
            for j in jobs[1:]
        },
        "summaries_equal": len({comparable(s) for s in summaries.values()}) == 1,
    }
    with open(os.path.join(args.out, "bench_jobs.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps(result, indent=1))


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wall(runs, jobs, repeat):
    return next(x["wall_s"] for x in runs if x["jobs"] == jobs and x["repeat"] == repeat)


if __name__ == "__main__":
    main()
