#!/usr/bin/env python3
"""The policy schema (docs/fwengine-policy.schema.json) against the reader, both ways.

Usage: run.py

1. Every plain-YAML policy in the repository (each tracked .yaml/.yml file with `apiVersion: fwengine/v1`
   outside tests/bad-input, and each whole policy in a yaml block of docs/yaml-format.md) is one the reader
   takes, so the schema must take it too: an editor must never flag a valid policy.
2. Every case of tests/bad-input/yaml is one the reader refuses. The schema must refuse it too, unless the
   case is listed in beyond-schema.txt (what JSON Schema cannot see: references, contradictions across
   fields or files, address syntax); a listed case the schema refuses must leave the list, so that it
   stays exact.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

try:
    import jsonschema
    import yaml
except ImportError as missing:
    print(f"skipped: {missing.name} is not installed (Debian: python3-jsonschema, python3-yaml)")
    sys.exit(77)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCHEMA = ROOT / "docs" / "fwengine-policy.schema.json"
BAD_CASES = ROOT / "tests" / "bad-input" / "yaml"
API_VERSION = "fwengine/v1"


class CoreSchemaLoader(yaml.SafeLoader):
    """YAML 1.2's core schema, as fwengine's reader and editors resolve plain scalars (PyYAML is YAML 1.1:
    `yes` would be a boolean, `010` octal), and a repeated key an error, as the reader makes it."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_core_int(self, node):
        text = self.construct_scalar(node)
        digits = text.lstrip("+-")
        sign = -1 if text.startswith("-") else 1
        if digits.startswith("0x"):
            return int(digits[2:], 16)
        if digits.startswith("0o"):
            return int(digits[2:], 8)
        return sign * int(digits, 10)

    def construct_core_bool(self, node):
        return self.construct_scalar(node).lower() == "true"


CoreSchemaLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag.rsplit(":", 1)[1] not in ("bool", "int", "float", "timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for tag, pattern, first in (
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
        ("tag:yaml.org,2002:float",
         r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
         "-+.0123456789")):
    CoreSchemaLoader.add_implicit_resolver(tag, re.compile(pattern), list(first))
CoreSchemaLoader.add_constructor("tag:yaml.org,2002:int", CoreSchemaLoader.construct_core_int)
CoreSchemaLoader.add_constructor("tag:yaml.org,2002:bool", CoreSchemaLoader.construct_core_bool)


def documents(text):
    return [doc for doc in yaml.load_all(text, Loader=CoreSchemaLoader) if doc is not None]


def first_error(validator, docs):
    for doc in docs:
        error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
        if error:
            return f"{error.json_path}: {error.message}"
    return None


def repository_policies():
    listed = subprocess.run(["git", "ls-files", "-z", "*.yaml", "*.yml"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in listed:
        if not name or name.startswith("tests/bad-input/"):
            continue
        text = (ROOT / name).read_text(encoding="utf-8")
        if f"apiVersion: {API_VERSION}" in text:
            yield name, documents(text)
    guide = ROOT / "docs" / "yaml-format.md"
    text = guide.read_text(encoding="utf-8")
    for block in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.S | re.M):
        line = text.count("\n", 0, block.start()) + 1
        try:
            docs = documents(block.group(1))
        except yaml.YAMLError:
            continue  # a fragment with placeholders, not a policy
        policies = [d for d in docs if isinstance(d, dict) and d.get("apiVersion") == API_VERSION]
        if policies:
            yield f"{guide.relative_to(ROOT)}:{line}", policies


def schema_refuses(validator, case):
    for path in sorted(case.rglob("*")):
        if path.suffix not in (".yaml", ".yml"):
            continue
        try:
            docs = documents(path.read_bytes())
        except (yaml.YAMLError, RecursionError):
            return True  # not YAML, or nested too deep: no schema check gets to see it
        if first_error(validator, docs):
            return True
    return False


def main():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    failures = []

    policies = 0
    for name, docs in repository_policies():
        policies += 1
        if error := first_error(validator, docs):
            failures.append(f"{name}: a valid policy, but the schema refuses it: {error}")

    beyond = {line.split("#")[0].strip() for line in (HERE / "beyond-schema.txt").read_text().splitlines()}
    beyond.discard("")
    cases = sorted(p.name for p in BAD_CASES.iterdir() if p.is_dir() and not p.name.startswith("_"))
    for name in sorted(beyond - set(cases)):
        failures.append(f"beyond-schema.txt: {name} is no case of {BAD_CASES.relative_to(ROOT)}")
    for name in cases:
        refused = schema_refuses(validator, BAD_CASES / name)
        if not refused and name not in beyond:
            failures.append(f"{name}: the reader refuses it, the schema takes it (make the schema refuse it, "
                            "or list the case in beyond-schema.txt with why it cannot)")
        if refused and name in beyond:
            failures.append(f"{name}: the schema refuses it now: remove it from beyond-schema.txt")

    for failure in failures:
        print(f"FAIL {failure}")
    print(f"{policies} policies valid under the schema; {len(cases) - len(beyond)} of {len(cases)} bad-input "
          f"cases refused by it, {len(beyond)} beyond it; {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
