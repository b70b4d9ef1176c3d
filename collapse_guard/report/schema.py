"""The layout of a schema-1 report record, written down once as data, and the checker that holds a record to it.

:data:`REPORT` is the layout: for every key the JSON types its value may have. A spec is one of

* a kind: ``"integer"`` (as in JSON Schema, a number without a fractional part: ``5`` or ``5.0``), ``"number"``
  (an integer or a float, ``NaN`` and ``Infinity`` included, or ``"nan"``, ``"inf"``, ``"-inf"``: how
  :func:`~collapse_guard.report.record.jsonable` writes non-finite floats), ``"string"``, ``"boolean"`` (never an
  integer or a number), ``"null"``, or ``"any"`` (any JSON value: what the user gave, recorded as given);
* :class:`Obj`: an object with known keys (some required) and a spec for every other key (:func:`map_of`: only
  other keys, a map of name -> value);
* :class:`Arr`: an array whose items all have one spec;
* a tuple of specs: any one of them (``(NUMBER, NULL)``: a number or ``null``).

An integer (of an ``"integer"`` or a ``"number"``) must be one a float can hold (:data:`MAX_INTEGER`): the plots
draw epochs and values as floats.

A key is required when the renderers (:mod:`~collapse_guard.report.summary`, :mod:`~collapse_guard.report.html`,
:mod:`~collapse_guard.report.plots`) index it (``record["final"]``, an event's ``"epoch"``); they read every other
key with a default, so it may be absent. Unknown keys are allowed (a writer of the same version may add some), with
the ``rest`` spec of their object (``"any"`` unless said). The renderers take any value that passes
:func:`check_layout`: the mutation test of ``tests/report/test_report_schema.py`` holds them to it.
"""
from __future__ import annotations

import json
import numbers
import re
import sys
from typing import Any, Mapping, NamedTuple, Union

INTEGER, NUMBER, STRING, BOOLEAN, NULL, ANY = "integer", "number", "string", "boolean", "null", "any"
#: the strings that stand for non-finite numbers in a record
NON_FINITE = ("nan", "inf", "-inf")
#: the largest integer a record holds: one a float can hold (epochs go to matplotlib as floats)
MAX_INTEGER = sys.float_info.max


class Obj(NamedTuple):
    """An object: ``fields`` maps each known key to its spec, ``required`` names the keys it must have, ``rest`` is
    the spec of every other key's value."""

    fields: Mapping[str, Any]
    required: frozenset
    rest: Any = ANY


class Arr(NamedTuple):
    """An array whose every item has the spec ``items``."""

    items: Any


Spec = Union[str, Obj, Arr, tuple]


def obj(required: Mapping[str, Spec], optional: Mapping[str, Spec] = (), rest: Spec = ANY) -> Obj:
    """An object with the keys of ``required`` (each must be there) and of ``optional``, others of spec ``rest``."""
    return Obj({**required, **dict(optional)}, frozenset(required), rest)


def map_of(values: Spec) -> Obj:
    """An object of name -> value, every value of spec ``values``."""
    return Obj({}, frozenset(), values)


def array_of(items: Spec) -> Arr:
    """An array, every item of spec ``items``."""
    return Arr(items)


# -- schema 1 -------------------------------------------------------------------------------------------------
NUMBER_OR_NULL, INTEGER_OR_NULL, STRING_OR_NULL = (NUMBER, NULL), (INTEGER, NULL), (STRING, NULL)

_RULE_STATE = {"checks": INTEGER, "first_values": array_of(NUMBER), "best": NUMBER_OR_NULL, "wait": INTEGER,
               "last_stderr": NUMBER_OR_NULL, "values": array_of(NUMBER)}
_RULE = {  # RuleState.summary(), under the schema's key names
    "threshold": NUMBER_OR_NULL, "relative": NUMBER_OR_NULL, "sigmas": NUMBER_OR_NULL, "stderr": STRING_OR_NULL,
    "baseline": STRING, "baseline_checks": INTEGER, "min_change": NUMBER, "min_delta": NUMBER,
    "action": STRING_OR_NULL, "non_finite": STRING, "noise": STRING, "baseline_value": NUMBER_OR_NULL,
    "bound": NUMBER_OR_NULL,
}
_RULE_REQUIRED = {"name": STRING, "monitor": STRING, "mode": STRING, "patience": INTEGER}
#: a member of a family rule: a rule of its own (members have no members), under RuleState.summary()'s own names
MEMBER_RULE = obj(_RULE_REQUIRED, {**_RULE, "margin": NUMBER, "state": obj({}, _RULE_STATE)})
RULE = obj(_RULE_REQUIRED, {
    **_RULE, "state": obj({}, {**_RULE_STATE, "members": map_of(obj({}, _RULE_STATE))}), "members": map_of(MEMBER_RULE),
})
EVENT = obj(
    {"epoch": INTEGER, "rule": STRING, "action": STRING, "value": NUMBER_OR_NULL, "threshold": NUMBER_OR_NULL,
     "reason": STRING},
    {"global_step": INTEGER_OR_NULL, "monitor": STRING, "rules": array_of(STRING),
     "sources": array_of(STRING)},  # sources: the sources a "quarantine" event names (empty for other actions)
)
#: what a rule judged at one check (CheckLog's rule entry): the value, the bound in force then, whether it lay
#: beyond it and whether the rule fired; a family rule's with the member shown and every member judged
JUDGED = {"value": NUMBER_OR_NULL, "bound": NUMBER_OR_NULL, "violated": BOOLEAN, "fired": BOOLEAN}
CHECK = obj({"epoch": INTEGER}, {
    "global_step": INTEGER_OR_NULL, "action": STRING, "state": STRING, "word": STRING,
    "rules": array_of(obj({"rule": STRING}, {**JUDGED, "monitor": STRING, "member": STRING_OR_NULL,
                                             "members": map_of(obj({}, JUDGED))})),
})
GUARD = obj({}, {
    "state": STRING, "injections": INTEGER, "cooldown_left": INTEGER,
    "config": obj({}, {"action": STRING_OR_NULL, "inject_fraction": NUMBER_OR_NULL,
                       "real_fraction_step": NUMBER_OR_NULL, "max_injections": INTEGER_OR_NULL,
                       "cooldown": INTEGER_OR_NULL, "strict": BOOLEAN, "restore_best": (BOOLEAN, NULL)}),
    "rules": array_of(RULE), "events": array_of(EVENT), "checks": array_of(CHECK),  # checks: added, optional
})
INJECTION = obj({}, {"epoch": INTEGER_OR_NULL, "samples": INTEGER, "real_fraction_floor": NUMBER_OR_NULL,
                     "reserve_remaining": INTEGER, "reason": STRING_OR_NULL, "real_fraction_before": NUMBER_OR_NULL,
                     "real_fraction_after": NUMBER_OR_NULL})
SOURCE = obj(  # generator, generation and params: as the user gave them
    {"name": STRING, "kind": STRING},
    {"generator": ANY, "generation": ANY, "params": ANY, "size": INTEGER_OR_NULL, "training_pool": INTEGER_OR_NULL,
     "samples": INTEGER, "share": NUMBER_OR_NULL, "heldout_copies": INTEGER_OR_NULL, "streaming": BOOLEAN},
)
_PRDC = {"precision": NUMBER_OR_NULL, "recall": NUMBER_OR_NULL, "density": NUMBER_OR_NULL, "coverage": NUMBER_OR_NULL}
#: a SourceAudit's audit (``provenance.audit``): each synthetic source against the real training data, and the
#: real-vs-real baseline
AUDIT = obj({}, {
    "samples": INTEGER, "k": INTEGER,
    "real": obj({}, {"samples": INTEGER_OR_NULL, "classes": INTEGER_OR_NULL, **_PRDC}),
    "sources": map_of(obj({}, {"samples": INTEGER_OR_NULL, "missing_classes": (array_of(INTEGER), NULL),
                               "class_tv": NUMBER_OR_NULL, **_PRDC, "coverage_vs_best": NUMBER_OR_NULL,
                               "heldout_copies": INTEGER_OR_NULL})),
})
#: a quarantine of synthetic sources (``MixedDataModule.quarantine``): their shares before and after
QUARANTINE = obj({}, {"epoch": INTEGER_OR_NULL, "sources": array_of(STRING), "weight": NUMBER_OR_NULL,
                      "reason": STRING_OR_NULL, "shares_before": map_of(NUMBER_OR_NULL),
                      "shares_after": map_of(NUMBER_OR_NULL), "real_fraction_before": NUMBER_OR_NULL,
                      "real_fraction_after": NUMBER_OR_NULL})
PROVENANCE = obj({"sources": array_of(SOURCE)}, {
    "schema_version": INTEGER, "kind": STRING, "seed": INTEGER_OR_NULL, "samples_total": INTEGER,
    "real_share": NUMBER_OR_NULL, "heldout": obj({}, {"real": INTEGER_OR_NULL, "synthetic": INTEGER_OR_NULL}),
    "injections": (array_of(INJECTION), NULL), "contamination": map_of(ANY),
    "audit": (AUDIT, NULL), "quarantines": array_of(QUARANTINE),  # added: a SourceAudit's, the quarantines
})
RATIO = obj({"sources": array_of(STRING)}, {"history": array_of(obj(
    {"epoch": INTEGER},
    {"real_fraction": NUMBER_OR_NULL, "real_fraction_cumulative": NUMBER_OR_NULL,
     "real_fraction_target": NUMBER_OR_NULL, "samples": map_of(INTEGER), "shares": map_of(NUMBER_OR_NULL)},
))})
INDICATORS = obj({}, {
    "every_n_epochs": INTEGER, "keys": array_of(STRING),
    "history": array_of(obj({"epoch": INTEGER}, {"global_step": INTEGER_OR_NULL}, rest=NUMBER_OR_NULL)),
})
RUN = obj({}, {"current_epoch": INTEGER_OR_NULL, "global_step": INTEGER_OR_NULL, "max_epochs": INTEGER_OR_NULL,
               "world_size": INTEGER, "should_stop": BOOLEAN, "dirpath": STRING_OR_NULL})
FINAL = obj({}, {
    "epoch": INTEGER_OR_NULL, "global_step": INTEGER_OR_NULL, "real_fraction": NUMBER_OR_NULL,
    "real_fraction_cumulative": NUMBER_OR_NULL, "guard_state": STRING_OR_NULL, "events": INTEGER,
    "stopped_by_guard": BOOLEAN, "metrics": map_of(NUMBER_OR_NULL), "guard_health": STRING_OR_NULL,
})
#: a reference run (e.g. real data only) as a report keeps it (``report.reference.reference_section``)
REFERENCE = obj({"path": STRING}, {"created": STRING_OR_NULL, "status": STRING_OR_NULL, "ratio": (RATIO, NULL),
                                   "indicators": (INDICATORS, NULL), "final": FINAL})
#: the whole record (``schema_version`` and ``kind`` are checked first, by ``check_record``)
REPORT = obj({
    "schema_version": INTEGER, "kind": STRING, "created": STRING, "status": STRING, "error": STRING_OR_NULL,
    "run": RUN, "ratio": (RATIO, NULL), "indicators": (INDICATORS, NULL), "guards": array_of(GUARD),
    "injections": array_of(INJECTION), "provenance": (PROVENANCE, NULL), "final": FINAL,
}, {"reference": (REFERENCE, NULL),  # optional: added after the first records were written
    "source_indicators": (INDICATORS, NULL)})  # a SourceCheck's values at each check (collapse/source/...)


# -- the checker ----------------------------------------------------------------------------------------------
_NAMES = {INTEGER: "an integer", NUMBER: "a number", STRING: "a string", BOOLEAN: "a boolean", NULL: "null",
          Obj: "an object", Arr: "an array"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def json_type(value: Any) -> str:
    """The JSON type of ``value`` in words: ``"an integer"``, ``"a number"`` (a float), ``"a boolean"``, ..."""
    if isinstance(value, bool):
        return _NAMES[BOOLEAN]
    if isinstance(value, numbers.Integral):
        return _NAMES[INTEGER] if abs(value) <= MAX_INTEGER else f"an integer beyond ±{MAX_INTEGER:.3g}"
    if isinstance(value, numbers.Real):
        return _NAMES[NUMBER]
    kind = {type(None): NULL, str: STRING, dict: Obj, list: Arr}.get(type(value))
    return _NAMES[kind] if kind is not None else type(value).__name__


def matches(value: Any, spec: Spec) -> bool:
    """Whether ``value`` is of the kind of ``spec`` (its top level only; a tuple: of one of its specs). Booleans
    are neither integers nor numbers; ``5.0`` is an integer (JSON has one number type), ``NaN`` is not; an integer
    beyond :data:`MAX_INTEGER` is neither."""
    if type(spec) is tuple:  # alternatives (Obj and Arr are tuples too: named ones)
        return any(matches(value, s) for s in spec)
    if spec == ANY:
        return True
    if isinstance(value, bool):
        return spec == BOOLEAN
    if isinstance(value, numbers.Integral) and abs(value) > MAX_INTEGER:
        return False  # not a number a float can hold: too large for a plot
    if spec == INTEGER:  # as in JSON Schema: a number without a fractional part (``5.0`` too)
        return isinstance(value, numbers.Integral) or isinstance(value, float) and value.is_integer()
    if spec == NUMBER:
        return isinstance(value, numbers.Real) or value in NON_FINITE
    if isinstance(spec, str):
        return isinstance(value, {STRING: str, NULL: type(None), BOOLEAN: bool}[spec])
    return isinstance(value, dict if isinstance(spec, Obj) else list)


def _alternatives(spec: Spec) -> tuple:
    return spec if type(spec) is tuple else (spec,)


def _describe(spec: Spec) -> str:
    specs = _alternatives(spec)
    non_finite = " (or " + ", ".join(f'"{s}"' for s in NON_FINITE) + ")"
    return " or ".join(_NAMES[s] + (non_finite if s == NUMBER else "") if isinstance(s, str) else _NAMES[type(s)]
                       for s in specs)


def format_path(path: tuple) -> str:
    """``("guards", 0, "events", 2, "epoch")`` as ``guards[0].events[2].epoch``; a key that is not an identifier
    as a JSON string in brackets (``history[0]["collapse/acc"]``)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "the record"


def check_layout(record: Any, spec: Spec = REPORT) -> None:
    """Check that ``record`` (read back from JSON) has the layout ``spec`` (default: a schema-1 report), in
    document order, without recursion (an explicit stack: a record of any depth is safe; ``"any"`` values are not
    entered).

    Args:
        record: the parsed JSON.
        spec: the layout to hold it to (see the module docstring).

    Raises:
        ValueError: naming the first offending path, what it is and what a report has there, e.g.
            ``guards[0].events[2].epoch is a string; a report has an integer there.``

    Example::

        check_layout(json.loads(text))                        # a whole report
        check_layout(record["provenance"], PROVENANCE)        # one section
    """
    stack = [(record, spec, ())]
    while stack:
        value, spec, path = stack.pop()
        if not matches(value, spec):
            raise ValueError(f"{format_path(path)} is {json_type(value)}; a report has {_describe(spec)} there.")
        inner = next((s for s in _alternatives(spec) if isinstance(s, (Obj, Arr)) and matches(value, s)), None)
        if isinstance(inner, Obj):
            missing = [key for key in inner.fields if key in inner.required and key not in value]
            if missing:
                raise ValueError(f"{format_path(path)} has no {missing[0]!r}; a report always has one there.")
            children = [(v, inner.fields.get(k, inner.rest), path + (k,)) for k, v in value.items()]
        elif isinstance(inner, Arr):
            children = [(v, inner.items, path + (i,)) for i, v in enumerate(value)]
        else:
            continue
        stack.extend(child for child in reversed(children) if child[1] != ANY)
