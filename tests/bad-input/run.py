#!/usr/bin/env python3
"""Bad-input corpus: every case must exit 2 with exactly its golden diagnostics, and leave the kernel as it was.

Usage: run.py --fwengine PATH [--update] [--no-kernel] [--kernel-sample N] [CASE-FILTER...]

A case is a directory tests/bad-input/<kind>/<name>/ holding its input files, an optional `args` file
(extra command-line arguments, one per line; `{case}` stands for the case directory) and `expected`
(the exact stderr). How a case is run depends on its kind:

  calico     fwengine --frontend calico --node node1 -f CASE ARGS check
  yaml       fwengine --frontend yaml -f CASE ARGS check
  firewalld  fwengine --frontend firewalld --firewalld-defaults firewalld/_stock -f CASE ARGS check
  config     fwengine --config CASE/fwengine.conf ARGS check   (ARGS default: -f fixtures/yaml/example)
  cli        fwengine ARGS                                      (ARGS is the whole command line)

Every kind but config gets `--config /dev/null` first (unless ARGS names --config), so that the host's
/etc/fwengine/fwengine.conf cannot change the outcome. Commands run from the repository root, so the paths
in messages are repository-relative. Directories whose name starts with `_` are not cases.

The kernel part (root only, else skipped with exit 77 once the golden part passed): in a network
namespace of its own, per kind it applies a valid policy, then runs a sample of the kind's cases as
`--netns NS ... apply`, each of which must exit 2 and leave `nft list ruleset` byte-for-byte the same.
"""

import argparse
import concurrent.futures
import difflib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
KINDS = ("calico", "yaml", "firewalld", "config", "cli")
STOCK = HERE.relative_to(ROOT) / "firewalld" / "_stock"
NO_CONFIG = ["--config", "/dev/null"]
# The valid policy each kind's kernel check starts from (arguments before the command).
BASELINES = {
    "calico": NO_CONFIG + ["--frontend", "calico", "--node", "control1.kryukov.local",
                           "-f", "fixtures/calico/home-cluster"],
    "yaml": NO_CONFIG + ["--frontend", "yaml", "-f", "fixtures/yaml/example"],
    "firewalld": NO_CONFIG + ["--frontend", "firewalld", "--firewalld-defaults", str(STOCK),
                              "-f", "fixtures/firewalld/overlay"],
    "config": NO_CONFIG + ["--frontend", "yaml", "-f", "fixtures/yaml/ipv6"],
}


class Case:
    def __init__(self, kind, path):
        self.kind = kind
        self.path = path
        self.rel = path.relative_to(ROOT)
        self.name = f"{kind}/{path.name}"
        self.expected = path / "expected"

    def extra_args(self):
        args_file = self.path / "args"
        if not args_file.exists():
            return None
        return [a.replace("{case}", str(self.rel)) for a in args_file.read_text().splitlines()]

    def argv(self, command="check"):
        """The command line without the fwengine binary; `command` is appended except for cli cases."""
        args = self.extra_args()
        if self.kind == "cli":
            return ([] if "--config" in args else NO_CONFIG) + args
        if self.kind == "config":
            conf = self.path / "fwengine.conf"
            front = ["--config", str(self.rel / "fwengine.conf")] if conf.exists() else []
            return front + (args if args is not None else ["-f", "fixtures/yaml/example"]) + [command]
        front = {
            "calico": ["--frontend", "calico", "--node", "node1"],
            "yaml": ["--frontend", "yaml"],
            "firewalld": ["--frontend", "firewalld", "--firewalld-defaults", str(STOCK)],
        }[self.kind]
        return NO_CONFIG + front + ["-f", str(self.rel)] + (args or []) + [command]


def find_cases(filters):
    cases = []
    for kind in KINDS:
        for path in sorted((HERE / kind).iterdir()):
            if path.is_dir() and not path.name.startswith("_"):
                case = Case(kind, path)
                if not filters or any(f in case.name for f in filters):
                    cases.append(case)
    return cases


def run(argv):
    return subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", timeout=60)


def check_golden(fwengine, case, update):
    """Returns an error text, or None when the case passes."""
    result = run([fwengine] + case.argv())
    if result.returncode != 2:
        return f"exit code {result.returncode}, expected 2\nstderr:\n{result.stderr}"
    if update:
        if not case.expected.exists() or case.expected.read_text() != result.stderr:
            case.expected.write_text(result.stderr)
            print(f"updated {case.rel / 'expected'}")
        return None
    if not case.expected.exists():
        return f"no golden file {case.rel / 'expected'} (run with --update to write it)\nstderr:\n{result.stderr}"
    expected = case.expected.read_text()
    if expected == result.stderr:
        return None
    diff = difflib.unified_diff(expected.splitlines(keepends=True), result.stderr.splitlines(keepends=True),
                                fromfile=str(case.rel / "expected"), tofile="actual stderr")
    return "stderr differs from the golden file:\n" + "".join(diff)


def sample(cases, count):
    """`count` cases spread evenly over the sorted list, so the sample is the same on every run."""
    if len(cases) <= count:
        return cases
    return [cases[i * len(cases) // count] for i in range(count)]


class Namespace:
    """A network namespace of our own, removed (with fwengine's state for it) however the run ends."""

    def __init__(self, fwengine):
        self.fwengine = fwengine
        self.name = f"fwe-bad-{os.getpid()}"

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        return self

    def __exit__(self, *exc):
        subprocess.run([self.fwengine, "--netns", self.name, "flush"], cwd=ROOT, capture_output=True)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
        shutil.rmtree(f"/run/fwengine/{self.name}", ignore_errors=True)
        return False

    def ruleset(self):
        return subprocess.run(["ip", "netns", "exec", self.name, "nft", "list", "ruleset"], check=True,
                              capture_output=True, text=True).stdout


def check_kernel(fwengine, cases, sample_size):
    """Yields (name, error text or None) for each kernel check."""
    with Namespace(fwengine) as ns:
        for kind, baseline in BASELINES.items():
            kind_cases = [c for c in cases if c.kind == kind]
            if not kind_cases:
                continue
            applied = run([fwengine, "--netns", ns.name] + baseline + ["apply"])
            if applied.returncode != 0:
                yield (f"kernel/{kind} baseline",
                       f"the valid policy did not apply (exit {applied.returncode}):\n{applied.stderr}")
                continue
            before = ns.ruleset()
            if not before.strip():
                yield f"kernel/{kind} baseline", "the valid policy left an empty ruleset"
                continue
            for case in sample(kind_cases, sample_size):
                result = run([fwengine, "--netns", ns.name] + case.argv(command="apply"))
                after = ns.ruleset()
                error = None
                if result.returncode != 2:
                    error = f"apply exited {result.returncode}, expected 2\nstderr:\n{result.stderr}"
                elif after != before:
                    diff = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                                fromfile="ruleset before", tofile="ruleset after")
                    error = "the bad input changed the kernel's ruleset:\n" + "".join(diff)
                yield f"kernel/{case.name}", error


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fwengine", required=True, help="the fwengine binary")
    parser.add_argument("--update", action="store_true", help="rewrite the golden files with the current output")
    parser.add_argument("--no-kernel", action="store_true", help="skip the kernel part")
    parser.add_argument("--kernel-sample", type=int, default=12, metavar="N",
                        help="cases per kind in the kernel part (default 12)")
    parser.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                        help="golden cases run side by side (default: the CPUs, at most 4)")
    parser.add_argument("filters", nargs="*", help="run only cases whose kind/name contains one of these")
    opts = parser.parse_args()
    fwengine = str(Path(opts.fwengine).resolve())

    cases = find_cases(opts.filters)
    passed = failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        errors = list(pool.map(lambda case: check_golden(fwengine, case, opts.update), cases))
    for case, error in zip(cases, errors):
        if error:
            failed += 1
            print(f"FAIL {case.name}: {error}")
        else:
            passed += 1

    skipped = None
    if opts.no_kernel or opts.update:
        skipped = None
    elif os.geteuid() != 0:
        skipped = "kernel part skipped: needs root"
    elif not shutil.which("nft") or not shutil.which("ip"):
        skipped = "kernel part skipped: needs nft and ip"
    else:
        for name, error in check_kernel(fwengine, cases, opts.kernel_sample):
            if error:
                failed += 1
                print(f"FAIL {name}: {error}")
            else:
                passed += 1
    if skipped:
        print(skipped)
    print(f"{passed} passed, {failed} failed")
    if failed:
        return 1
    return 77 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
