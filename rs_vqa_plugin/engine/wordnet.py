"""WordNet for scoring, offline: nltk's reader over Debian's wordnet-base (or nltk's own data).

Debian's /usr/share/wordnet lacks the 'lexnames' file nltk's reader opens at start-up; we serve
WordNet 3.0's fixed list of 45 lexicographer files (documented in lexnames(5WN)) in its place.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Optional

from .errors import RuntimeSetupError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
_REQUIRED = ("index.noun", "index.verb", "index.adj", "index.adv",
             "data.noun", "data.verb", "data.adj", "data.adv",
             "noun.exc", "verb.exc", "adj.exc", "adv.exc")

# WordNet 3.0 lexicographer files: number = position; syntactic category 1 noun, 2 verb, 3 adj, 4 adv.
_LEXNAMES = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
    ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1),
    ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1),
    ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1),
    ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1),
    ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2),
    ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2), ("verb.creation", 2),
    ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2), ("verb.possession", 2),
    ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2), ("adj.ppl", 3),
)

_reader = None


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(_LEXNAMES))


def _reader_class():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class DebianWordNetReader(WordNetCorpusReader):
        """nltk's reader over a WordNet 3.0 directory that may lack 'lexnames'."""

        def open(self, file):
            if file == "lexnames" and not os.path.exists(os.path.join(self.root.path, "lexnames")):
                return io.StringIO(lexnames_text())
            return super().open(file)

        def map_wn(self, version="wordnet"):
            # The version map only serves the multilingual (OMW) data, which scoring never uses;
            # computing it would look for nltk's downloaded 'wordnet' corpus.
            return None

    return DebianWordNetReader


def _find_root() -> Path:
    if all((DEBIAN_WORDNET / name).is_file() for name in _REQUIRED):
        return DEBIAN_WORDNET
    import nltk

    try:
        return Path(nltk.data.find("corpora/wordnet"))
    except LookupError:
        pass
    raise RuntimeSetupError(
        f"No WordNet data found (looked in {DEBIAN_WORDNET} and nltk's data path): install the "
        "Debian package wordnet-base (./build.sh setup does), or put nltk's 'wordnet' corpus in "
        "an nltk_data folder.")


def wordnet(root: Optional[Path] = None):
    """The WordNet reader used for scoring, built once per process (about 2 s)."""
    global _reader
    if _reader is not None and root is None:
        return _reader
    try:
        import nltk
    except ImportError as exc:
        from ..setup_advice import runtime_setup_advice
        raise RuntimeSetupError(f"nltk is not installed in this Python: {runtime_setup_advice()}."
                                ) from exc
    folder = Path(root) if root is not None else _find_root()
    missing = [name for name in _REQUIRED if not (folder / name).is_file()]
    if missing:
        raise RuntimeSetupError(f"WordNet data in {folder} is incomplete (missing "
                                f"{', '.join(missing)}): reinstall wordnet-base.")
    # nltk only opens files below the folders of its data path.
    if str(folder) not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(str(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "multilingual functions are not available": not needed
        reader = _reader_class()(str(folder), None)
    if root is None:
        _reader = reader
    return reader
