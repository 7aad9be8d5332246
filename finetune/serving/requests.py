"""What ``POST /predict`` accepts, checked field by field: a text, a list, pairs, or Text Embeddings Inference's shape.

    {"text": "..."}                       one text          -> the kind's output for it
    {"text": "...", "text_pair": "..."}   one pair          -> the kind's output for it
    {"texts": ["...", ...]}               a list of texts   -> a list of outputs, in input order
    {"texts": [["...", "..."], ...]}      a list of pairs   -> a list of outputs, in input order
    {"inputs": ...}                       Text Embeddings Inference's /predict: a text, a pair
                                          ["first", "second"], or a list of either
    "top_k": n                            (optional) the n best labels of a single-label run
    "min_confidence": p                   (optional) abstain below this confidence (0-1), instead of the
                                          server's --min-confidence

A bad request raises ``RequestError`` with its HTTP status and one line naming the problem.
"""

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from pydantic import BaseModel, Field

from finetune.inference.predictor import Text

FIELDS = (
    "text",
    "text_pair",
    "texts",
    "inputs",
    "top_k",
    "min_confidence",
    "truncate",
    "truncation_direction",
    "raw_scores",
)
MAX_TEXTS = 1024  # texts in one request (TEI's default client batch is 32; a file belongs to finetune.predict)
MAX_CHARS = 100_000  # characters in one text: the tokenizer truncates to the model's length, but reads it all first


class RequestError(ValueError):
    """A request the server refuses: its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Limits:
    """What one request may hold, and what the run takes: single texts, pairs, or either (a plain model folder)."""

    max_texts: int = MAX_TEXTS
    max_chars: int = MAX_CHARS
    pairs: Optional[bool] = None  # True: the run's task reads two text fields; None: not known


@dataclass
class Parsed:
    """A checked request: its texts (or pairs), whether it asked for one output or a list, top_k and min_confidence."""

    texts: List[Text]
    single: bool
    top_k: Optional[int] = None
    min_confidence: Optional[float] = None  # None: the server's

    @property
    def pairs(self) -> bool:
        return bool(self.texts) and isinstance(self.texts[0], tuple)


class PredictRequest(BaseModel):
    """The request body, for the OpenAPI page (/docs); give exactly one of text, texts or inputs."""

    text: Optional[str] = Field(None, description="one text")
    text_pair: Optional[str] = Field(None, description="with text: the second text of a pair")
    texts: Optional[List[Union[str, Tuple[str, str]]]] = Field(
        None, description="a list of texts, or of [first, second] pairs"
    )
    inputs: Optional[Union[str, List[Union[str, Tuple[str, str]]]]] = Field(
        None,
        description="Text Embeddings Inference's shape: a text, a pair [first, second], or a list of texts or pairs",
    )
    top_k: Optional[int] = Field(None, ge=1, description="single-label: only the k most probable labels")
    min_confidence: Optional[float] = Field(
        None, gt=0, le=1, description="abstain below this confidence (default: the server's --min-confidence)"
    )
    truncate: Optional[bool] = Field(
        None, description="accepted for TEI clients: texts are always truncated to the run's max_length"
    )
    raw_scores: Optional[bool] = Field(
        None, description="TEI's raw logits: refused, the server answers with the run's own scores"
    )


def parse(body: bytes, limits: Limits) -> Parsed:
    """The checked request, or a ``RequestError`` naming what is wrong with it."""
    if not body.strip():
        raise RequestError(400, 'empty body: send JSON such as {"text": "..."}, {"texts": [...]} or {"inputs": ...}')
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(400, f"the body is not JSON ({error})") from None
    if not isinstance(request, dict):
        raise RequestError(422, f'the body must be a JSON object such as {{"texts": [...]}}, got {_kind_of(request)}')
    unknown = [k for k in request if k not in FIELDS]
    if unknown:
        raise RequestError(
            422,
            f"unknown field {unknown[0]!r}: expected text (and text_pair), texts or inputs, "
            "and optionally top_k and min_confidence",
        )
    given = [k for k in ("text", "texts", "inputs") if request.get(k) is not None]
    if len(given) != 1:
        which = "none" if not given else " and ".join(given)
        raise RequestError(422, f"give exactly one of text, texts or inputs (got {which})")
    if request.get("raw_scores"):
        raise RequestError(
            422, "raw_scores is not served: the answers are the run's own scores (probabilities, thresholds, values)"
        )
    if request.get("text_pair") is not None and given[0] != "text":
        raise RequestError(422, "text_pair goes with text; for a list of pairs use texts: [[first, second], ...]")
    parsed = _read(given[0], request, limits)
    parsed.top_k = _top_k(request.get("top_k"))
    parsed.min_confidence = _min_confidence(request.get("min_confidence"))
    _check(parsed, limits)
    return parsed


def _read(field: str, request: Dict[str, Any], limits: Limits) -> Parsed:
    value = request[field]
    if field == "text":
        text = _string(value, "text")
        pair = request.get("text_pair")
        return Parsed([(text, _string(pair, "text_pair"))] if pair is not None else [text], single=True)
    if field == "texts":
        if not isinstance(value, list):
            raise RequestError(422, f"texts must be a list of texts or of [first, second] pairs, got {_kind_of(value)}")
        return Parsed([_item(v, f"texts[{i}]") for i, v in enumerate(value)], single=False)
    # TEI's reading: a string is one text, ["a", "b"] one pair (where the run reads pairs),
    # else a list of texts or pairs
    if isinstance(value, str):
        return Parsed([value], single=True)
    if not isinstance(value, list):
        raise RequestError(
            422, f"inputs must be a text, a [first, second] pair or a list of them, got {_kind_of(value)}"
        )
    if limits.pairs is not False and len(value) == 2 and all(isinstance(v, str) for v in value):
        return Parsed([(value[0], value[1])], single=True)
    return Parsed([_item(v, f"inputs[{i}]") for i, v in enumerate(value)], single=False)


def _item(value: Any, where: str) -> Text:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 2:
        return (_string(value[0], f"{where}[0]"), _string(value[1], f"{where}[1]"))
    raise RequestError(422, f"{where} must be a text or a [first, second] pair, got {_kind_of(value)}")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RequestError(422, f"{where} must be a string, got {_kind_of(value)}")
    return value


def _top_k(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(422, f"top_k must be a whole number >= 1, got {json.dumps(value)}")
    return value


def _min_confidence(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise RequestError(422, f"min_confidence must be a probability in (0, 1], e.g. 0.8, got {json.dumps(value)}")
    return float(value)


def _check(parsed: Parsed, limits: Limits) -> None:
    """The request against the run and the server's limits."""
    texts = parsed.texts
    if not texts:
        raise RequestError(422, "the list of texts is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise RequestError(
            413,
            f"{len(texts)} texts in one request; "
            f"this server takes at most {limits.max_texts} (--max-texts): split the request",
        )
    kinds = {isinstance(t, tuple) for t in texts}
    if len(kinds) > 1:
        raise RequestError(422, "a mix of single texts and pairs in one request: send them separately")
    if limits.pairs is False and parsed.pairs:
        raise RequestError(422, "this run classifies one text at a time, not pairs: send texts, not [first, second]")
    if limits.pairs is True and not parsed.pairs:
        raise RequestError(
            422, 'this run classifies pairs: send {"text": first, "text_pair": second} or texts: [[first, second], ...]'
        )
    for i, text in enumerate(texts):
        longest = max(map(len, text)) if isinstance(text, tuple) else len(text)
        if longest > limits.max_chars:
            raise RequestError(
                413, f"text {i} has {longest} characters; this server takes at most {limits.max_chars} (--max-chars)"
            )


def _kind_of(value: Any) -> str:
    """A JSON value's type, as a client would name it."""
    names = {
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }
    shown = json.dumps(value)
    return f"{names.get(type(value), type(value).__name__)} ({shown if len(shown) <= 40 else shown[:37] + '...'})"
