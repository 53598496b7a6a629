"""The one word list behind every generated text: benchmark workloads, load tests and the trained fixture's corpus."""

from __future__ import annotations

__all__ = ["WORDS"]

#: Vocabulary of generated text (workloads, load tests, the trained fixture's corpus).
WORDS = (
    "the of and to in is was for on that by with as at from his her an are were which be this "
    "city river war king music film album team season game player company government state party "
    "population capital island church university school book novel series episode character song "
    "released founded born died located known largest first second third national international "
    "american british french german river mountain lake ocean north south east west century year "
    "million thousand hundred people language history culture science energy water light plant cell "
    "protein gene disease treatment patient hospital doctor court law president minister election "
    "army battle empire revolution independence treaty bridge railway station airport road museum "
    "painting artist poet author writer director actor award prize championship league cup club "
    "records chart single version original production studio network television radio broadcast "
    "system computer software data network internet program language code algorithm model theory "
    "chemical element atom molecule reaction temperature pressure speed distance area region district"
).split()
