"""A job definition as YAML the way a person writes a job file: block style, multi-line strings as ``|``."""

import yaml


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as ``|`` literals: how a person writes a job file."""


def _str(dumper, value):
    style = "|" if "\n" in value and value.strip() else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(value) -> str:
    """``value`` (a job definition, say) as YAML for people."""
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=100)
