"""Tokenizer and vocabulary for radiology report text (lecture: report generation, unit 06; unit 02).

The Indiana University chest X-ray reports (Demner-Fushman et al. 2016) read like
``"Heart size is normal. XXXX XXXX are within normal limits. No pneumothorax."``: the
de-identification replaced names, dates and some ordinary words with ``XXXX``. A word-level
model should see one token for every such gap, however it was written (``XXXX``, ``XXXX.``,
``XXXX-XXXX``, ``x-XXXX``), so :class:`ReportTokenizer` maps each run of them to one
anonymisation token (``"xxxx"`` by default, the spelling the report-generation literature keeps
after lower-casing).

:class:`Vocabulary` turns tokens into integer ids for an embedding layer. Ids 0-3 are the
special tokens ``<pad>`` (0, so that ``padding_idx=0`` works), ``<bos>``, ``<eos>`` and ``<unk>``;
``encode_batch`` pads a list of texts into a ``(batch, time)`` tensor and returns the lengths a
packed or masked RNN needs.

Example::

    >>> tok = ReportTokenizer()
    >>> tok("Heart size is normal. XXXX XXXX are within normal limits.")
    ['heart', 'size', 'is', 'normal', '.', 'xxxx', 'are', 'within', 'normal', 'limits', '.']
"""
from __future__ import annotations

import json
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

__all__ = [
    "PAD", "BOS", "EOS", "UNK", "SPECIAL_TOKENS",
    "ReportTokenizer", "tokenize_report", "split_sentences", "detokenize", "Vocabulary",
]

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

# One pattern, tried left to right at each position:
#  special - "<unk>", "<num>": decoded model output must tokenize back to the same tokens.
#  anon   - a run of de-identification marks, "XXXX", "XXXX XXXX", "XXXX-XXXX", "XXXX/XXXX";
#           matched on the original case so that an ordinary word is never mistaken for one.
#  number - an integer or decimal ("2", "1.5") that is not glued to letters ("8mm" and "6th" are words).
#  word   - letters/digits, possibly joined by hyphens or apostrophes ("well-expanded", "t12").
#  punct  - any other single non-space character.
_TOKEN_RE = re.compile(
    r"""
      (?P<special><[a-z]+>)
    | (?P<anon>X{3,}(?:[\s/-]+X{3,})*)
    | (?P<number>\d+(?:\.\d+)?(?![^\W_]))
    | (?P<word>[^\W_]+(?:['-][^\W_]+)*)
    | (?P<punct>\S)
    """,
    re.VERBOSE,
)
_ANON_PART_RE = re.compile(r"X{3,}")
_WORD_JOINERS_RE = re.compile(r"['-]")
# Closing punctuation is written without a space before it, opening brackets without one after.
_NO_SPACE_BEFORE = frozenset(".,;:?!)]%")
_NO_SPACE_AFTER = frozenset("([")
_SENTENCE_END = frozenset(".?!")


class ReportTokenizer:
    """Split report text into word tokens; a callable ``text -> list[str]``.

    Parameters
    ----------
    lowercase:
        Lower-case every word (default True: "Heart" and "heart" are one word to a model).
    punctuation:
        ``"keep"`` makes every punctuation mark its own token; ``"period"`` (default) keeps only
        sentence ends (``.``, ``?``, ``!``, written as ``"."``), which is how the report-generation
        literature prepares the IU reports and what sentence splitting needs; ``"drop"`` removes all.
    numbers:
        ``"keep"`` (default) keeps numbers as tokens (``"1.5"``), ``"token"`` replaces each by
        ``"<num>"``, ``"drop"`` removes them. Words with digits ("t12", "8mm", "6th") are words.
    anon_token:
        The token every de-identification gap ("XXXX") becomes; ``None`` keeps it as written.
    merge_anon:
        Map a run like ``"XXXX XXXX"`` or ``"XXXX-XXXX"`` to one token (default True): the number
        of marks in a gap says nothing about what was removed.

    drop_list_markers:
        Drop enumeration marks (the ``"1."`` in ``"1. No acute disease. 2. ..."``): a number followed
        by ``.`` or ``)`` and a space at the start of the text or of a sentence (default True), so
        the marks do not become one-word sentences.

    A hyphenated word with a de-identified part (``"x-XXXX"``) is split at its hyphens so the
    known part survives: ``["x", "xxxx"]``. Repeated sentence ends (``"age.."``) count once.
    """

    def __init__(self, lowercase: bool = True, punctuation: str = "period", numbers: str = "keep",
                 anon_token: str | None = "xxxx", merge_anon: bool = True, drop_list_markers: bool = True):
        if punctuation not in ("keep", "period", "drop"):
            raise ValueError(f"punctuation must be 'keep', 'period' or 'drop', got {punctuation!r}")
        if numbers not in ("keep", "token", "drop"):
            raise ValueError(f"numbers must be 'keep', 'token' or 'drop', got {numbers!r}")
        if anon_token is not None and (not isinstance(anon_token, str) or not anon_token
                                       or any(ch.isspace() for ch in anon_token)):
            raise ValueError(f"anon_token must be a non-empty string without spaces or None, got {anon_token!r}")
        self.lowercase = bool(lowercase)
        self.punctuation = punctuation
        self.numbers = numbers
        self.anon_token = anon_token
        self.merge_anon = bool(merge_anon)
        self.drop_list_markers = bool(drop_list_markers)

    def config(self) -> dict:
        """The settings, as a JSON-able dict (``ReportTokenizer(**config)`` rebuilds it)."""
        return {"lowercase": self.lowercase, "punctuation": self.punctuation, "numbers": self.numbers,
                "anon_token": self.anon_token, "merge_anon": self.merge_anon,
                "drop_list_markers": self.drop_list_markers}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"ReportTokenizer({args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ReportTokenizer) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(self.config().items()))

    def _anon(self, raw: str) -> list[str]:
        marks = _ANON_PART_RE.findall(raw)
        if self.anon_token is None:
            return [m.lower() if self.lowercase else m for m in marks]
        return [self.anon_token] * (1 if self.merge_anon else len(marks))

    def __call__(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        tokens: list[str] = []
        skip_to = 0
        for match in _TOKEN_RE.finditer(text):
            if match.start() < skip_to:
                continue
            kind, raw = match.lastgroup, match.group()
            if kind == "number" and self.drop_list_markers and _is_list_marker(text, match, tokens):
                skip_to = match.end() + 1  # the number and its "." or ")"
                continue
            if kind == "special":
                new = [raw]
            elif kind == "anon":
                new = self._anon(raw)
            elif kind == "number":
                new = [] if self.numbers == "drop" else ["<num>" if self.numbers == "token" else raw]
            elif kind == "word":
                if _ANON_PART_RE.search(raw):
                    # "x-XXXX", "XXXX-of-view": keep the readable parts, replace the hidden ones.
                    new = []
                    for part in _WORD_JOINERS_RE.split(raw):
                        if _ANON_PART_RE.search(part):
                            new.extend(self._anon(part))
                        elif part:
                            new.append(part.lower() if self.lowercase else part)
                else:
                    new = [raw.lower() if self.lowercase else raw]
            else:  # punctuation
                if self.punctuation == "drop":
                    continue
                if self.punctuation == "period":
                    if raw not in _SENTENCE_END:
                        continue
                    raw = "."
                if raw in _SENTENCE_END and tokens and tokens[-1] == raw:
                    continue  # "age.." and "!!" are one sentence end
                new = [raw]
            if self.merge_anon and self.anon_token is not None and new and new[0] == self.anon_token \
                    and tokens and tokens[-1] == self.anon_token:
                new = new[1:]  # "XXXX XXXX-XXXX" spread over two matches is still one gap
            tokens.extend(new)
        return tokens

    def sentences(self, text: str) -> list[list[str]]:
        """Tokens of each sentence (split after ``.``/``?``/``!``), for a sentence-level decoder."""
        return split_sentences(self(text))


def _is_list_marker(text: str, match, tokens: list[str]) -> bool:
    end = match.end()
    if tokens and tokens[-1] not in _SENTENCE_END:
        return False  # mid-sentence: "grade 2." ends a sentence with a number
    if "." in match.group() or end >= len(text) or text[end] not in ".)":
        return False
    return end + 1 == len(text) or text[end + 1].isspace()


_DEFAULT_TOKENIZER = ReportTokenizer()


def tokenize_report(text: str, **options) -> list[str]:
    """Tokenize one report with :class:`ReportTokenizer` (``options`` are its parameters)."""
    tokenizer = ReportTokenizer(**options) if options else _DEFAULT_TOKENIZER
    return tokenizer(text)


def split_sentences(tokens: Sequence[str]) -> list[list[str]]:
    """Cut a token list after every sentence end (``.``, ``?``, ``!``); the end stays with its sentence.

    Tokens after the last sentence end form a final sentence; empty sentences are not returned.
    """
    sentences, current = [], []
    for token in tokens:
        current.append(token)
        if token in _SENTENCE_END:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def detokenize(tokens: Iterable[str]) -> str:
    """Join tokens into readable text: spaces between words, none before ``.``/``,`` or after ``(``."""
    out: list[str] = []
    previous = None
    for token in tokens:
        if out and token not in _NO_SPACE_BEFORE and previous not in _NO_SPACE_AFTER:
            out.append(" ")
        out.append(token)
        previous = token
    return "".join(out)


def as_tokens(text, tokenize: Callable[[str], Sequence[str]] | None = None, what: str = "text") -> list[str]:
    """Tokens of one sentence for the metrics: a string is split on whitespace (or by ``tokenize``),
    a list/tuple of strings is taken as already tokenized. Anything else is a TypeError."""
    if isinstance(text, str):
        if tokenize is None:
            return text.split()
        tokens = tokenize(text)
        if isinstance(tokens, str) or not isinstance(tokens, Sequence):
            raise TypeError(f"tokenize must return a list of strings, got {type(tokens).__name__}")
    elif isinstance(text, (list, tuple)):
        tokens = text
    else:
        raise TypeError(f"{what} must be a string or a list of string tokens, got {type(text).__name__}")
    for token in tokens:
        if not isinstance(token, str):
            raise TypeError(f"{what} contains a non-string token {token!r} of type {type(token).__name__}")
    return list(tokens)


def as_references(references, tokenize=None, what: str = "references") -> list[list[str]]:
    """Token lists of the references of one hypothesis.

    ``references`` is a list of references, each a string or a list of string tokens; a single
    string is accepted as one reference. (A single *pre-tokenized* reference must be wrapped:
    ``[["the", "cat"]]``; ``["the", "cat"]`` means two one-word references.)
    """
    if isinstance(references, str):
        return [as_tokens(references, tokenize, what)]
    if not isinstance(references, (list, tuple)):
        raise TypeError(f"{what} must be a list of strings or of token lists, got {type(references).__name__}")
    if len(references) == 0:
        raise ValueError(f"{what} is empty: every hypothesis needs at least one reference")
    return [as_tokens(ref, tokenize, f"a reference in {what}") for ref in references]


def as_corpus(texts, what: str, single: str) -> list:
    """A corpus argument as a list: any iterable but a string (a list, tuple, pandas Series, ...).
    ``single`` names the sentence-level function to suggest when one string was passed."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what} must be a list with one entry per example, not a single string "
                        f"(use {single} for one sentence)")
    try:
        return list(texts)
    except TypeError:
        raise TypeError(f"{what} must be a list with one entry per example, got {type(texts).__name__}") from None


class Vocabulary:
    """Token <-> id mapping with the special tokens ``<pad>``=0, ``<bos>``=1, ``<eos>``=2, ``<unk>``=3.

    Build it from training texts with :meth:`build`; ids are assigned by decreasing frequency
    (ties alphabetical) so the same corpus always gives the same ids. Unknown tokens encode to
    ``<unk>``.

    Parameters
    ----------
    tokens:
        The ordinary tokens in id order (ids start at 4, after the special tokens).
    tokenizer:
        The :class:`ReportTokenizer` used when :meth:`encode` gets a string (default settings if None).
    counts:
        Optional token counts from the training corpus (kept for inspection and saved with the vocabulary).
    """

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Iterable[str] = (), tokenizer: ReportTokenizer | None = None,
                 counts: dict[str, int] | None = None):
        self.tokenizer = tokenizer if tokenizer is not None else ReportTokenizer()
        self.itos: list[str] = list(SPECIAL_TOKENS)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        for token in tokens:
            if not isinstance(token, str):
                raise TypeError(f"vocabulary tokens must be strings, got {token!r}")
            if token in self.stoi:
                raise ValueError(f"token {token!r} appears twice (or is a special token)")
            self.stoi[token] = len(self.itos)
            self.itos.append(token)
        self.counts = Counter(counts or {})

    @classmethod
    def build(cls, texts: Iterable, min_freq: int = 1, max_size: int | None = None,
              tokenizer: ReportTokenizer | None = None) -> "Vocabulary":
        """Count tokens over ``texts`` (strings, or token lists) and keep those seen ``min_freq`` times.

        ``max_size`` caps the number of ordinary tokens (the most frequent are kept).
        """
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1, got {min_freq!r}")
        if max_size is not None and (not isinstance(max_size, int) or max_size < 0):
            raise ValueError(f"max_size must be a non-negative integer or None, got {max_size!r}")
        tokenizer = tokenizer if tokenizer is not None else ReportTokenizer()
        if isinstance(texts, str):
            raise TypeError("texts must be a list of texts, not one string")
        counts: Counter = Counter()
        for text in texts:
            tokens = tokenizer(text) if isinstance(text, str) else as_tokens(text, what="a text")
            counts.update(tokens)
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)  # a literal "<unk>" in the data must not become a second id
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size]
        return cls(kept, tokenizer=tokenizer, counts=dict(counts))

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token) -> bool:
        return token in self.stoi

    def __getitem__(self, token: str) -> int:
        return self.stoi.get(token, self.unk_id)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos and self.tokenizer == other.tokenizer

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens incl. 4 special, tokenizer={self.tokenizer!r})"

    def token_to_id(self, token: str) -> int:
        return self.stoi.get(token, self.unk_id)

    def id_to_token(self, index: int) -> str:
        index = int(index)
        if not 0 <= index < len(self.itos):
            raise IndexError(f"id {index} is outside the vocabulary (size {len(self.itos)})")
        return self.itos[index]

    def encode(self, text, add_bos: bool = True, add_eos: bool = True, max_length: int | None = None) -> list[int]:
        """Ids of one text (a string is tokenized first; a token list is used as is).

        ``max_length`` limits the whole sequence, ``<bos>``/``<eos>`` included: the text is cut so
        that the ``<eos>`` still ends it.
        """
        tokens = self.tokenizer(text) if isinstance(text, str) else as_tokens(text, what="text")
        ids = [self.stoi.get(t, self.unk_id) for t in tokens]
        if max_length is not None:
            room = max_length - int(add_bos) - int(add_eos)
            if room < 0:
                raise ValueError(f"max_length={max_length} leaves no room for the <bos>/<eos> tokens")
            ids = ids[:room]
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode_tokens(self, ids: Iterable[int], skip_special: bool = True, stop_at_eos: bool = True) -> list[str]:
        """Tokens of a sequence of ids; stops at the first ``<eos>`` and drops ``<pad>``/``<bos>``."""
        tokens = []
        for index in _as_int_list(ids):
            if stop_at_eos and index == self.eos_id:
                break
            if skip_special and index in (self.pad_id, self.bos_id, self.eos_id):
                continue
            tokens.append(self.id_to_token(index))
        return tokens

    def decode(self, ids: Iterable[int], skip_special: bool = True, stop_at_eos: bool = True) -> str:
        """Readable text of a sequence of ids (see :meth:`decode_tokens` and :func:`detokenize`)."""
        return detokenize(self.decode_tokens(ids, skip_special, stop_at_eos))

    def encode_batch(self, texts: Sequence, add_bos: bool = True, add_eos: bool = True,
                     max_length: int | None = None, device=None):
        """Pad the encoded texts into one batch.

        Returns ``(ids, lengths)``: a ``torch.long`` tensor ``(batch, time)`` filled with ``<pad>``
        (id 0) after each sequence, and a ``torch.long`` tensor ``(batch,)`` of true lengths
        (what ``pack_padded_sequence`` and the masked layers of ``dlmi.rnn`` take).
        """
        import torch  # only the batch helpers need torch; the metrics stay importable without it

        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of texts; use encode() for one text")
        sequences = [self.encode(t, add_bos, add_eos, max_length) for t in texts]
        if not sequences:
            raise ValueError("encode_batch got no texts")
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
        ids = torch.full((len(sequences), max(1, int(lengths.max()))), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(sequences):
            if seq:
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        if device is not None:
            ids, lengths = ids.to(device), lengths.to(device)
        return ids, lengths

    def decode_batch(self, ids, lengths=None, skip_special: bool = True, stop_at_eos: bool = True) -> list[str]:
        """Texts of a ``(batch, time)`` id tensor/array/list; ``lengths`` cuts each row first."""
        rows = ids.tolist() if hasattr(ids, "tolist") else [list(r) for r in ids]
        if lengths is not None:
            lengths = lengths.tolist() if hasattr(lengths, "tolist") else list(lengths)
            if len(lengths) != len(rows):
                raise ValueError(f"{len(lengths)} lengths for a batch of {len(rows)} sequences")
            rows = [row[: int(n)] for row, n in zip(rows, lengths)]
        return [self.decode(row, skip_special, stop_at_eos) for row in rows]

    def to_dict(self) -> dict:
        return {"format": "dlmi.text.Vocabulary", "version": 1, "special_tokens": list(SPECIAL_TOKENS),
                "tokens": self.itos[len(SPECIAL_TOKENS):], "tokenizer": self.tokenizer.config(),
                "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        if not isinstance(data, dict) or data.get("format") != "dlmi.text.Vocabulary":
            raise ValueError("not a saved dlmi.text.Vocabulary")
        if list(data.get("special_tokens", [])) != list(SPECIAL_TOKENS):
            raise ValueError(f"saved vocabulary has special tokens {data.get('special_tokens')}, expected {list(SPECIAL_TOKENS)}")
        return cls(data["tokens"], tokenizer=ReportTokenizer(**data.get("tokenizer", {})), counts=data.get("counts"))

    def save(self, path) -> Path:
        """Write the vocabulary (tokens, tokenizer settings, counts) as JSON; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path) -> "Vocabulary":
        """Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a saved vocabulary (invalid JSON: {err})") from None
        return cls.from_dict(data)


def _as_int_list(ids) -> list[int]:
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        raise TypeError("decode takes a sequence of ids, not one id")
    out = []
    for i in ids:
        if isinstance(i, bool):
            raise TypeError(f"token ids must be integers, got {i!r}")
        try:
            out.append(operator.index(i))  # accepts int and numpy integers, rejects floats and strings
        except TypeError:
            raise TypeError(f"token ids must be integers, got {i!r}") from None
    return out
