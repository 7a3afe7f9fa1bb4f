"""Write the Prometheus Operator's PrometheusRule from ferricflowd.rules.yml (one source).

    python deploy/prometheus/make_prometheusrule.py           # rewrite the PrometheusRule
    python deploy/prometheus/make_prometheusrule.py --check   # exit 1 if it is out of date

The tests run --check, so an edit of the rules file without a rewrite fails CI.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "ferricflowd.rules.yml"
TARGET = HERE.parent / "kubernetes" / "components" / "prometheus-operator" / "prometheusrule.yaml"
HEADER = """\
# Generated from deploy/prometheus/ferricflowd.rules.yml by
# deploy/prometheus/make_prometheusrule.py: edit the rules file, then rerun the script.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions) as literal blocks, as a person writes them."""


def _str(dumper: yaml.SafeDumper, value: str) -> Any:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    rules = yaml.safe_load(RULES.read_text())
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "ferricflowd", "labels": {"app.kubernetes.io/name": "ferricflowd"}},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(resource, Dumper=_Dumper, sort_keys=False, width=4096)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
