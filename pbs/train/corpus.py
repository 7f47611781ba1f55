"""The proxy's pretraining corpus: long natural documents available offline, rebuilt from a manifest.

Sources (``CorpusConfig.sources``):

* ``python``: documentation and source files (``.rst``, ``.md``, ``.txt``, ``.py``) of the installed Python
  distributions (``importlib.metadata``), one document per file. Built where it runs (the GPU machine reads its
  own packages; nothing is transferred); the manifest lists every distribution and version read.
* ``debian``: Debian packages (``.deb`` files in ``deb_dir``, fetched by ``scripts/fetch_corpus_debs.sh``): their
  text files under ``usr/share/doc``, ``usr/share/dictd`` and ``usr/share/wordnet`` (HTML reduced to text,
  gzip/dictzip unpacked; changelogs and copyright files skipped). The manifest records each file's sha256.
* ``kjv``: the shipped King James Bible (``pbs/eval/ruler/data/kjv.txt.gz``), one document per 64 KiB of verses.

Documents are cleaned (control characters dropped, line ends normalised, runs of blank lines collapsed), cut into
pieces of at most ``max_doc_chars`` at line boundaries, dropped below ``min_doc_chars``, deduplicated by content
and ordered by their sha256 (so sources interleave and the order does not depend on the file system). A document
is held out when its hash, read as a fraction, is below ``heldout_fraction``. Each source is capped at
``max_chars`` characters (documents in hash order until the cap; by default 200 M of Python packages, mostly
code, beside 100 M of Debian prose and the 4 M of the KJV). Outputs in ``out_dir``: ``train.txt.xz``,
``heldout.txt.xz`` (documents separated by a blank line; xz with fixed settings, byte-identical on rebuild from
the same inputs) and ``manifest.json``.
"""

from __future__ import annotations

import gzip
import hashlib
import html.parser
import io
import json
import lzma
import re
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pbs.train.data import KJV_PATH

SOURCES = ("python", "debian", "kjv")
PYTHON_SUFFIXES = (".rst", ".md", ".txt", ".py")
DEB_TEXT_DIRS = ("usr/share/doc/", "usr/share/dictd/", "usr/share/wordnet/", "usr/share/debian-reference/")
# copies and non-prose inside those packages: rendered HTML of text kept elsewhere, other languages, indices
DEB_SKIP = (
    r"^usr/share/doc/linux-doc-[^/]+/html/",  # the HTML rendering of Documentation/ (kept as reStructuredText)
    r"/Documentation/translations/",  # the kernel documentation in other languages
    r"/html/(?!en-US/)[a-z]{2}-[A-Z]{2}/",  # the Debian handbook in other languages
    r"^usr/share/debian-reference/.*\.html$",  # the same text as its debian-reference.en.txt.gz
    r"\.(index|pdf|png|svg|jpg|gif|css|js)$",
    r"^usr/share/wordnet/(index\.|cntlist|lexnames|sentidx|sents|verb\.Framestext|.*\.exc$)",
)
_SKIP_NAMES = re.compile(r"^(changelog|copyright|news\.debian|readme\.debian|buildinfo)", re.IGNORECASE)
_BLANKS = re.compile(r"\n{3,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class CorpusConfig:
    """What goes into the corpus. Sizes in characters."""

    sources: list[str] = field(default_factory=lambda: list(SOURCES))
    out_dir: str = "corpus"
    deb_dir: str = ".corpus/debs"  # the .deb files of the debian source
    python_paths: list[str] | None = None  # sys.path entries to read distributions from (None: this interpreter's)
    min_doc_chars: int = 2000
    max_doc_chars: int = 1_000_000
    max_chars: dict[str, int] = field(default_factory=lambda: {"python": 200_000_000, "debian": 100_000_000,
                                                                "kjv": 10_000_000})
    heldout_fraction: float = 0.02
    deb_skip: list[str] = field(default_factory=lambda: list(DEB_SKIP))  # regexes over paths inside a .deb

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown:
            raise ValueError(f"sources: unknown {unknown}; choose from {list(SOURCES)}")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got heldout_fraction={self.heldout_fraction!r}")
        if not 0 < self.min_doc_chars <= self.max_doc_chars:
            raise ValueError(f"need 0 < min_doc_chars <= max_doc_chars, got {self.min_doc_chars}, {self.max_doc_chars}")


@dataclass(frozen=True)
class Document:
    source: str  # python | debian | kjv
    origin: str  # distribution or package and the file inside it
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------------------ cleaning


class _HTMLText(html.parser.HTMLParser):
    """Text of an HTML page: script/style dropped, a line break at every block element."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd", "section",
              "table", "blockquote", "ul", "ol", "dl"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_to_text(page: str) -> str:
    parser = _HTMLText()
    parser.feed(page)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    return "\n".join(lines)


def clean(text: str) -> str:
    """Line ends normalised, control characters dropped, trailing spaces and runs of blank lines collapsed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


def split_long(text: str, max_chars: int) -> list[str]:
    """Pieces of at most ``max_chars`` cut at line ends (a longer single line is cut where it must be)."""
    out, i = [], 0
    while len(text) - i > max_chars:
        j = text.rfind("\n", i, i + max_chars)
        j = i + max_chars if j <= i else j + 1
        out.append(text[i:j])
        i = j
    out.append(text[i:])
    return [p.strip() for p in out if p.strip()]


def _decode(data: bytes) -> str | None:
    """UTF-8 (or Latin-1 without control bytes) text, else None: binary files are skipped."""
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
        return None if _CONTROL.search(text[:8192]) else text


# ------------------------------------------------------------------------------------------------- sources


def python_documents(paths: list[str] | None = None) -> tuple[Iterator[Document], list[dict]]:
    """Documents of the installed distributions and the list of distributions read ({name, version, files})."""
    from importlib import metadata

    found = sorted(metadata.distributions(path=paths) if paths else metadata.distributions(),
                   key=lambda d: ((d.metadata["Name"] or "").lower(), d.version or ""))
    dists, seen = [], set()
    for dist in found:  # a distribution visible twice on the path: the first one only
        name = dist.metadata["Name"] or "?"
        if name.lower() not in seen:
            seen.add(name.lower())
            dists.append((name, dist))
    listed = [{"name": name, "version": dist.version,
               "files": sum(1 for f in dist.files or [] if f.suffix in PYTHON_SUFFIXES)} for name, dist in dists]

    def docs():
        for name, dist in dists:
            for f in sorted(dist.files or [], key=str):
                if f.suffix not in PYTHON_SUFFIXES:
                    continue
                try:
                    data = Path(dist.locate_file(f)).read_bytes()
                except OSError:
                    continue
                text = _decode(data)
                if text:
                    yield Document("python", f"{name}/{f}", text)

    return docs(), listed


def _ar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Members of a Unix ar archive (the container of a .deb)."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive (a .deb starts with '!<arch>')")
    i = 8
    while i + 60 <= len(data):
        header = data[i : i + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        yield name, data[i + 60 : i + 60 + size]
        i += 60 + size + (size & 1)


def _deb_control(control_tar: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(control_tar)) as tar:
        for m in tar.getmembers():
            if m.name.lstrip("./") == "control":
                text = tar.extractfile(m).read().decode("utf-8", "replace")
                return dict(re.findall(r"^(Package|Version): (.+)$", text, re.MULTILINE))
    return {}


def wordnet_glosses(text: str, pos: str) -> str:
    """WordNet's ``data.<pos>`` lines as ``lemma, lemma (pos): gloss`` (the license header and pointers dropped)."""
    out = []
    for line in text.splitlines():
        if line.startswith("  ") or " | " not in line:
            continue
        head, gloss = line.split(" | ", 1)
        fields_ = head.split()
        count = int(fields_[3], 16)
        lemmas = [fields_[4 + 2 * i].replace("_", " ") for i in range(count)]
        out.append(f"{', '.join(lemmas)} ({pos}): {gloss.strip()}")
    return "\n".join(out)


def deb_documents(deb: Path, skip: tuple[str, ...] | list[str] = DEB_SKIP) -> tuple[list[Document], dict]:
    """The text documents of one .deb and its manifest entry ({file, package, version, sha256, documents}).
    ``skip``: regexes over the paths inside the package (DEB_SKIP)."""
    skip_re = re.compile("|".join(f"(?:{p})" for p in skip)) if skip else None
    raw = deb.read_bytes()
    entry = {"file": deb.name, "sha256": hashlib.sha256(raw).hexdigest()}
    docs, data_tar = [], None
    for name, member in _ar_members(raw):
        if name.startswith("control.tar"):
            entry.update({k.lower(): v for k, v in _deb_control(member).items()})
        elif name.startswith("data.tar"):
            data_tar = member
    if data_tar is None:
        raise ValueError(f"{deb}: no data.tar member")
    with tarfile.open(fileobj=io.BytesIO(data_tar)) as tar:  # gz, xz and bz2 (tarfile detects them)
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            path = m.name.lstrip("./")
            base = path.rsplit("/", 1)[-1]
            if not m.isfile() or not path.startswith(DEB_TEXT_DIRS) or _SKIP_NAMES.match(base):
                continue
            if skip_re is not None and skip_re.search(path):
                continue
            data = tar.extractfile(m).read()
            if base.endswith((".gz", ".dz")):  # dictzip is gzip with an index
                try:
                    data = gzip.decompress(data)
                except (OSError, EOFError):
                    continue
                base = base[:-3]
            text = _decode(data)
            if not text:
                continue
            if base.endswith((".html", ".htm", ".xhtml")):
                text = html_to_text(text)
            elif path.startswith("usr/share/wordnet/data."):
                text = wordnet_glosses(text, base.split(".", 1)[1])
            docs.append(Document("debian", f"{entry.get('package', deb.name)}/{path}", text))
    entry["documents"] = len(docs)
    return docs, entry


def kjv_documents(path: Path = KJV_PATH, chunk_chars: int = 65536) -> list[Document]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    return [Document("kjv", f"kjv/{i}", piece) for i, piece in enumerate(split_long(text, chunk_chars))]


# --------------------------------------------------------------------------------------------------- build


def _pieces(docs, cfg: CorpusConfig) -> Iterator[Document]:
    for doc in docs:
        text = clean(doc.text)
        for i, piece in enumerate(split_long(text, cfg.max_doc_chars)):
            if len(piece) >= cfg.min_doc_chars:
                yield Document(doc.source, doc.origin if i == 0 else f"{doc.origin}#{i}", piece)


def heldout(sha256: str, fraction: float) -> bool:
    """A document is held out when its hash, as a fraction of 2^32, is below ``fraction``."""
    return int(sha256[:8], 16) / 2**32 < fraction


def build_corpus(cfg: CorpusConfig, progress: bool = True) -> dict:
    """Build ``train.txt.xz``, ``heldout.txt.xz`` and ``manifest.json`` in ``cfg.out_dir``; returns the manifest."""
    from tqdm.auto import tqdm

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"config": asdict(cfg), "sources": {}}
    by_hash: dict[str, Document] = {}
    for source in cfg.sources:
        if source == "python":
            docs, listed = python_documents(cfg.python_paths)
            manifest["sources"]["python"] = {"distributions": listed}
        elif source == "debian":
            debs = sorted(Path(cfg.deb_dir).glob("*.deb"))
            if not debs:
                raise FileNotFoundError(f"deb_dir: no .deb files in {cfg.deb_dir!r} (scripts/fetch_corpus_debs.sh "
                                        "fetches them)")
            entries, docs = [], []
            for deb in tqdm(debs, desc="debian packages", disable=not progress):
                d, entry = deb_documents(deb, cfg.deb_skip)
                docs += d
                entries.append(entry)
            manifest["sources"]["debian"] = {"packages": entries}
        else:
            docs = kjv_documents()
            manifest["sources"]["kjv"] = {"file": str(KJV_PATH.relative_to(KJV_PATH.parents[4])),
                                          "sha256": hashlib.sha256(KJV_PATH.read_bytes()).hexdigest()}
        kept = {}
        for doc in tqdm(_pieces(docs, cfg), desc=f"{source} documents", disable=not progress, unit="doc"):
            h = doc.sha256
            if h not in by_hash and h not in kept:
                kept[h] = doc
        cap, total, chosen = cfg.max_chars.get(source), 0, 0
        for h in sorted(kept):  # the cap keeps documents in hash order: a deterministic, unbiased subset
            if cap is not None and total + len(kept[h].text) > cap:
                continue
            by_hash[h] = kept[h]
            total += len(kept[h].text)
            chosen += 1
        manifest["sources"][source].update(documents=chosen, chars=total, dropped_by_cap=len(kept) - chosen)
    split = {"train": [], "heldout": []}
    for h in sorted(by_hash):
        split["heldout" if heldout(h, cfg.heldout_fraction) else "train"].append(by_hash[h])
    manifest["outputs"] = {}
    for name, docs in split.items():
        path = out / f"{name}.txt.xz"
        data = "\n\n".join(d.text for d in docs).encode("utf-8")
        path.write_bytes(lzma.compress(data, preset=6))
        manifest["outputs"][name] = {"file": path.name, "documents": len(docs), "chars": sum(len(d.text) for d in docs),
                                     "sha256_text": hashlib.sha256(data).hexdigest()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest
