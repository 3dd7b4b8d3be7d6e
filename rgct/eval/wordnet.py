"""WordNet 3.0 for NLTK's METEOR without a download at run time.

NLTK reads WordNet from its ``nltk_data`` folder (``corpora/wordnet``), which normally comes
from ``nltk.download`` (a network fetch). rgct looks, in order, at:

1. NLTK's own search path (a user who has ``nltk_data/corpora/wordnet``);
2. ``$RGCT_WORDNET_DIR``;
3. ``/usr/share/wordnet``, where Debian's ``wordnet-base`` package (``apt-get install
   wordnet-base``, run by ``make test``) puts the WordNet 3.0 database files.

Debian's files are the WordNet 3.0 database NLTK's corpus holds (``data.*``, ``index.*``,
``*.exc``) without the ``lexnames`` table, which NLTK's reader opens first; the table is the
fixed list of the 45 WordNet 3.0 lexicographer files (``lexnames(5WN)``), which rgct's reader
serves from memory when the folder lacks it; the folder is added to ``nltk.data.path``. PyPI has no package
that ships WordNet's data. When no copy is found, :func:`load_wordnet` returns None and the
caller reports METEOR as unavailable; nothing else is substituted.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEBIAN_WORDNET = Path("/usr/share/wordnet")
_DB_FILES = (
    *(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")),
    *(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")),
)
# WordNet 3.0 lexicographer files: number, name, syntactic category (lexnames(5WN))
_LEXNAMES = (
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1",
    "noun.artifact 1", "noun.attribute 1", "noun.body 1", "noun.cognition 1",
    "noun.communication 1", "noun.event 1", "noun.feeling 1", "noun.food 1", "noun.group 1",
    "noun.location 1", "noun.motive 1", "noun.object 1", "noun.person 1",
    "noun.phenomenon 1", "noun.plant 1", "noun.possession 1", "noun.process 1",
    "noun.quantity 1", "noun.relation 1", "noun.shape 1", "noun.state 1", "noun.substance 1",
    "noun.time 1", "verb.body 2", "verb.change 2", "verb.cognition 2", "verb.communication 2",
    "verb.competition 2", "verb.consumption 2", "verb.contact 2", "verb.creation 2",
    "verb.emotion 2", "verb.motion 2", "verb.perception 2", "verb.possession 2",
    "verb.social 2", "verb.stative 2", "verb.weather 2", "adj.ppl 3",
)  # fmt: skip


def _database_dir() -> Path | None:
    candidates = [os.environ.get("RGCT_WORDNET_DIR"), str(DEBIAN_WORDNET)]
    for c in candidates:
        if c and all((Path(c) / name).is_file() for name in _DB_FILES):
            return Path(c)
    return None


def _reader_for(db: Path) -> Any:
    import io

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    table = "".join(f"{i:02d}\t{e.replace(' ', chr(9))}\n" for i, e in enumerate(_LEXNAMES))

    class _Reader(WordNetCorpusReader):
        """NLTK's reader; the lexnames table comes from memory when the folder lacks it."""

        def open(self, fileid: str) -> Any:
            if fileid == "lexnames" and not (db / "lexnames").is_file():
                return io.StringIO(table)
            return super().open(fileid)

        def map_wn(self, version: str = "wordnet") -> None:
            # the map from NLTK's WordNet 3.0 to this one serves the multilingual (OMW)
            # functions only, which are not loaded; both are WordNet 3.0
            return None

    if str(db) not in nltk.data.path:
        nltk.data.path.append(str(db))  # NLTK only reads folders on its data path
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions")
        return _Reader(str(db), None)


@functools.lru_cache(maxsize=1)
def load_wordnet() -> Any | None:
    """NLTK's WordNet 3.0 reader from a local copy, or None when there is none (see module)."""
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet
    except (LookupError, OSError):
        pass
    db = _database_dir()
    if db is None:
        log.warning(
            "no WordNet found (nltk_data, $RGCT_WORDNET_DIR or Debian's wordnet-base in %s): "
            "NLTK METEOR is unavailable",
            DEBIAN_WORDNET,
        )
        return None
    return _reader_for(db)


def wordnet_source() -> str | None:
    """Where the WordNet in use comes from (a folder), or None when there is none."""
    wn = load_wordnet()
    return None if wn is None else str(Path(wn.root.path).resolve())
