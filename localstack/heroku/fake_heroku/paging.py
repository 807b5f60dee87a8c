"""Paging of Platform API lists (Range / Next-Range / Content-Range)."""

import re

from .util import PAGE_DEFAULT, PAGE_MAX, HerokuError


RANGE_RE = re.compile(r"^\s*(?P<field>[a-z_]+)\s+(?P<excl>\])?(?P<start>[^.;]*)\.\.(?P<end>[^;]*)"
                      r"(?:;(?P<params>.*))?$")


def paginate(items, range_header, allowed=("id",), default_field="id"):
    """Returns (status, page, headers) for a list of JSON objects."""
    field, start, end, excl, size, order = default_field, None, None, False, PAGE_DEFAULT, "asc"
    if range_header:
        m = RANGE_RE.match(range_header)
        if not m:
            raise HerokuError(416, "requested_range_not_satisfiable",
                              f"Invalid range: {range_header}")
        field = m.group("field")
        start = m.group("start").strip() or None
        end = m.group("end").strip() or None
        excl = bool(m.group("excl"))
        for part in re.split(r"[;,]", m.group("params") or ""):
            part = part.strip()
            if not part:
                continue
            k, _, v = part.partition("=")
            k, v = k.strip(), v.strip()
            if k == "max":
                if not v.isdigit() or int(v) < 1:
                    raise HerokuError(416, "requested_range_not_satisfiable",
                                      f"Invalid range max: {v}")
                size = min(int(v), PAGE_MAX)
            elif k == "order":
                if v not in ("asc", "desc"):
                    raise HerokuError(416, "requested_range_not_satisfiable",
                                      f"Invalid range order: {v}")
                order = v
        if field not in allowed:
            raise HerokuError(416, "requested_range_not_satisfiable",
                              f"Invalid range field: {field}. Valid fields: {', '.join(allowed)}.")

    def key(v):
        return (0, v, "") if isinstance(v, int) else (1, 0, str(v))

    def conv(s):
        return int(s) if s is not None and s.lstrip("-").isdigit() else s

    items = sorted(items, key=lambda o: key(o.get(field)), reverse=(order == "desc"))
    if start is not None:
        s = key(conv(start))
        if order == "asc":
            items = [o for o in items if key(o.get(field)) > s or (not excl and key(o.get(field)) == s)]
        else:
            items = [o for o in items if key(o.get(field)) < s or (not excl and key(o.get(field)) == s)]
    if end is not None:
        e = key(conv(end))
        items = [o for o in items if (key(o.get(field)) <= e if order == "asc" else key(o.get(field)) >= e)]
    page = items[:size]
    headers = {"Accept-Ranges": ", ".join(allowed)}
    if page:
        headers["Content-Range"] = f"{field} {page[0].get(field)}..{page[-1].get(field)}"
    status = 200
    if len(items) > size:
        status = 206
        headers["Next-Range"] = f"{field} ]{page[-1].get(field)}..; max={size}, order={order}"
    return status, page, headers
