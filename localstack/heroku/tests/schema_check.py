"""Validates fake Heroku responses against the official Platform API hyper-schema.

The response of a request is checked against the `targetSchema` of the schema link found by
method + href (hrefs like /apps/{(%23%2Fdefinitions%2Fapp%2Fdefinitions%2Fidentity)} become
/apps/[^/]+). `$ref`s resolve inside the one big schema document.

The schema uses interagent's `strictProperties: true` (every listed property present, no
others). Draft-04 does not know that keyword, so it is translated into `required` (all
properties) + `additionalProperties: false`, which makes the check strict like Heroku's own
clients expect. Responses to requests with Accept-Inclusion / Accept-Expansion headers carry
documented extra fields and are checked without that strictness.
"""

import copy
import json
import os
import re
import uuid

import jsonschema
from jsonschema import Draft4Validator, FormatChecker

HERE = os.path.dirname(os.path.abspath(__file__))
def find_schema():
    """The official Platform API schema is not part of this repository: it is read from
    HEROKU_PLATFORM_SCHEMA, or from shared/reference/heroku-platform-schema.json in the nearest
    ancestor directory of the checkout that has it (the project's shared reference folder)."""
    given = os.environ.get("HEROKU_PLATFORM_SCHEMA")
    if given:
        return given
    d = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
    while True:
        candidate = os.path.join(d, "shared", "reference", "heroku-platform-schema.json")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent



DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")

FORMATS = FormatChecker([])


@FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(value):
    if not isinstance(value, str):
        return True
    uuid.UUID(value)
    return True


@FORMATS.checks("date-time")
def _is_date_time(value):
    return not isinstance(value, str) or bool(DATE_TIME.match(value))


def _strip_meta(node):
    """Drops $schema / id keywords (hyper-schema metadata) that would re-base $refs."""
    if isinstance(node, dict):
        # only the string-valued keywords: a property called "id" has a dict value and stays
        return {k: _strip_meta(v) for k, v in node.items()
                if not (k in ("$schema", "id") and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_meta(v) for v in node]
    return node


def _strict(node):
    """strictProperties: true -> required: all properties, additionalProperties: false."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if out.get("strictProperties") is True and isinstance(out.get("properties"), dict):
            out.setdefault("additionalProperties", False)
            out["required"] = sorted(set(out.get("required", [])) | set(out["properties"]))
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


class Schema:
    def __init__(self, path):
        with open(path) as f:
            raw = json.load(f)
        base = _strip_meta(raw)
        self.loose_root = base
        self.strict_root = _strict(copy.deepcopy(base))
        self.links = []
        for name, definition in raw["definitions"].items():
            for link in definition.get("links", []):
                href = re.sub(r"\{\([^)]*\)\}", "[^/]+", link["href"])
                self.links.append({
                    "definition": name, "title": link.get("title"),
                    "method": link["method"].upper(), "href": link["href"],
                    "regex": re.compile("^" + href + "$"),
                    "targetSchema": _strip_meta(link.get("targetSchema")),
                })

    def find_link(self, method, path):
        """The schema link of a request; None when the schema has no such endpoint."""
        matches = [l for l in self.links if l["method"] == method and l["regex"].match(path)]
        # prefer the most specific href (fewest placeholders) when several match
        matches.sort(key=lambda l: l["href"].count("{"))
        return matches[0] if matches else None

    def validate(self, method, path, body, strict=True):
        """Raises AssertionError with the reasons when body does not fit; returns the link."""
        link = self.find_link(method, path)
        if link is None:
            raise AssertionError(f"no schema link for {method} {path}")
        target = link["targetSchema"]
        if target is None:
            raise AssertionError(f"schema link {link['definition']} {link['title']} has no "
                                 f"targetSchema")
        root = self.strict_root if strict else self.loose_root
        schema = dict(target)
        if strict:
            schema = _strict(schema)
        schema["definitions"] = root["definitions"]
        validator = Draft4Validator(schema, format_checker=FORMATS)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        if errors:
            lines = [f"{method} {path} does not match {link['definition']} '{link['title']}':"]
            for e in errors[:10]:
                lines.append(f"  at {'/'.join(map(str, e.path)) or '(root)'}: {e.message[:300]}")
            raise AssertionError("\n".join(lines))
        return link


def without_inclusions(body):
    """Accept-Inclusion: addon:plan,config_vars adds attachment fields the schema forbids
    (addon.additionalProperties is false): check their shape, then drop them for validation."""
    items = body if isinstance(body, list) else [body]
    out = []
    for item in items:
        item = copy.deepcopy(item)
        plan = item.get("addon", {}).pop("plan", None)
        assert plan is None or (isinstance(plan.get("name"), str) and ":" in plan["name"]), plan
        cv = item.pop("config_vars", None)
        assert cv is None or all(isinstance(v, str) and v.endswith("_URL") for v in cv), cv
        out.append(item)
    return out if isinstance(body, list) else out[0]


def check_error_body(status, body):
    """Heroku's error body: {"id": str, "message": str, "url"?: str} plus optional extras."""
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    assert isinstance(body.get("id"), str) and body["id"], f"error body without id: {body}"
    assert isinstance(body.get("message"), str) and body["message"], f"no message: {body}"
    if "url" in body:
        assert isinstance(body["url"], str)


__all__ = ["Schema", "check_error_body", "jsonschema"]
