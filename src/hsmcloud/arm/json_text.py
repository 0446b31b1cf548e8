"""Reading request bodies the way ARM's front end does: JSON, and single-quoted strings too.

ARM reads bodies with Json.NET, which accepts 'single-quoted' strings; Microsoft's own Payment
HSM guide sends `{ 'sku': { 'name': 'payShield10K_LMK1_CPS60' } }` that way (armclient,
Invoke-RestMethod). A body that is not strict JSON is read once more with its single-quoted
strings rewritten as double-quoted ones; anything else stays an error."""
from __future__ import annotations

import json


def _double_quoted(text: str) -> str:
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            quote, j, chars = c, i + 1, []
            while j < n and text[j] != quote:
                if text[j] == "\\" and j + 1 < n:
                    nxt = text[j + 1]
                    chars.append("'" if (quote == "'" and nxt == "'") else text[j:j + 2])
                    j += 2
                    continue
                chars.append('\\"' if (quote == "'" and text[j] == '"') else text[j])
                j += 1
            if j >= n:
                raise ValueError("unterminated string")
            out.append('"' + "".join(chars) + '"')
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def loads(raw: bytes) -> object:
    """The JSON value of a request body; raises ValueError (strict JSON's message) if there is none."""
    text = raw.decode("utf-8")
    try:
        return json.loads(text)
    except ValueError as strict:
        if "'" not in text:
            raise
        try:
            return json.loads(_double_quoted(text))
        except ValueError:
            raise strict from None
