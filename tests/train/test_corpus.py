"""The corpus builder on fixtures made here: a fake installed distribution, a .deb built byte by byte, the KJV."""

import gzip
import io
import json
import lzma
import tarfile

import pytest

from pbs.train.corpus import CorpusConfig, build_corpus, clean, deb_documents, heldout, html_to_text, split_long
from pbs.train.data import load_corpus_text

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "the", "river", "runs", "to", "the", "sea"]


def _prose(seed: int, chars: int) -> str:
    """Distinct readable text of about ``chars`` characters, lines of ~70."""
    words, i = [], seed
    while sum(len(w) + 1 for w in words) < chars:
        words.append(WORDS[(i * 7 + len(words)) % len(WORDS)] + ("" if len(words) % 11 else f" {seed}-{len(words)}"))
        i += 1
    text = " ".join(words)
    return "\n".join(text[j : j + 70] for j in range(0, len(text), 70))


def _tar(files: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode("ascii")
        assert len(header) == 60
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def _deb(path, package: str, files: dict[str, bytes]) -> None:
    control = _tar({"./control": f"Package: {package}\nVersion: 1.2-3\nArchitecture: all\n".encode()}, "w:gz")
    path.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.gz", control),
                          ("data.tar.xz", _tar(files, "w:xz"))]))


def test_html_to_text_drops_scripts_and_breaks_blocks():
    page = "<html><head><style>p{}</style><script>var x=1;</script></head><body><h1>Title</h1>" \
           "<p>First &amp; <b>bold</b> words.</p><ul><li>one</li><li>two</li></ul></body></html>"
    text = html_to_text(page)
    assert "var x" not in text and "p{}" not in text
    assert [line for line in text.splitlines() if line] == ["Title", "First & bold words.", "one", "two"]


def test_clean_and_split_long():
    assert clean("a\r\nb\x00c  \n\n\n\n\nd\x07") == "a\nbc\n\nd"
    text = "\n".join(f"line {i:04d}" for i in range(1000))
    pieces = split_long(text, 1000)
    assert all(len(p) <= 1000 for p in pieces) and "\n".join(pieces) == text
    assert split_long("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]  # one long line is cut where it must be


def test_deb_documents_reads_text_under_the_doc_dirs(tmp_path):
    guide = _prose(1, 3000)
    deb = tmp_path / "pkg_1.2-3_all.deb"
    _deb(deb, "pkg", {
        "./usr/share/doc/pkg/guide.html": f"<html><body><p>{guide}</p></body></html>".encode(),
        "./usr/share/doc/pkg/notes.txt.gz": gzip.compress(b"plain notes"),
        "./usr/share/dictd/words.dict.dz": gzip.compress(b"dictionary entries"),
        "./usr/share/doc/pkg/changelog.Debian.gz": gzip.compress(b"skipped"),
        "./usr/share/doc/pkg/copyright": b"skipped",
        "./usr/share/doc/pkg/logo.png": b"\x89PNG\x00\x00binary",
        "./usr/bin/tool": b"outside the doc dirs",
    })
    docs, entry = deb_documents(deb)
    assert entry["package"] == "pkg" and entry["version"] == "1.2-3" and entry["documents"] == 3
    by_origin = {d.origin: d.text for d in docs}
    assert set(by_origin) == {"pkg/usr/share/doc/pkg/guide.html", "pkg/usr/share/doc/pkg/notes.txt.gz",
                              "pkg/usr/share/dictd/words.dict.dz"}
    assert by_origin["pkg/usr/share/doc/pkg/notes.txt.gz"] == "plain notes"
    assert " ".join(by_origin["pkg/usr/share/doc/pkg/guide.html"].split()) == " ".join(guide.split())


def test_deb_documents_rejects_a_non_deb(tmp_path):
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="ar archive"):
        deb_documents(bad)


def _fake_site_packages(root, docs: dict[str, str]):
    """A distribution 'fakepkg' 0.1 installed under root with the given files (RECORD lists them)."""
    info = root / "fakepkg-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 0.1\n")
    record = []
    for name, text in docs.items():
        path = root / "fakepkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        record.append(f"fakepkg/{name},,")
    (root / "fakepkg" / "blob.bin").write_bytes(b"\x00" * 4000)
    record += ["fakepkg/blob.bin,,", "fakepkg-0.1.dist-info/METADATA,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


def _build(tmp_path, out: str, **overrides):
    site = tmp_path / "site"
    if not site.exists():
        shared = _prose(99, 5000)
        _fake_site_packages(site, {"guide.rst": _prose(2, 9000), "module.py": _prose(3, 4000), "tiny.md": "short",
                                   "copy_of_shared.txt": shared})
        debs = tmp_path / "debs"
        debs.mkdir()
        _deb(debs / "a_1_all.deb", "a", {"./usr/share/doc/a/manual.txt": _prose(4, 30000).encode(),
                                         "./usr/share/doc/a/shared.txt": shared.encode()})
    cfg = CorpusConfig(out_dir=str(tmp_path / out), deb_dir=str(tmp_path / "debs"), python_paths=[str(site)],
                       min_doc_chars=1000, max_doc_chars=8000, heldout_fraction=0.3,
                       max_chars={"python": 10**9, "debian": 10**9, "kjv": 50_000}, **overrides)
    return cfg, build_corpus(cfg, progress=False)


def test_build_corpus_end_to_end(tmp_path):
    _, manifest = _build(tmp_path, "c1")
    out = tmp_path / "c1"
    src = manifest["sources"]
    assert src["python"]["distributions"] == [{"name": "fakepkg", "version": "0.1", "files": 4}]
    assert src["debian"]["packages"][0]["package"] == "a" and len(src["debian"]["packages"][0]["sha256"]) == 64
    # python: guide (9000 chars: two pieces of <= 8000), module, the shared text; "short" is below min_doc_chars.
    # debian: manual (30000: four pieces), and its copy of the shared text is a duplicate of the python one
    assert src["python"]["documents"] == 4 and src["debian"]["documents"] == 4
    assert src["kjv"]["chars"] <= 50_000 and src["kjv"]["dropped_by_cap"] > 0
    train = lzma.decompress((out / "train.txt.xz").read_bytes()).decode()
    held = lzma.decompress((out / "heldout.txt.xz").read_bytes()).decode()
    outputs = manifest["outputs"]
    total = sum(src[s]["documents"] for s in src)
    assert outputs["train"]["documents"] + outputs["heldout"]["documents"] == total
    assert 0 < outputs["heldout"]["documents"] < total
    assert len(train) == outputs["train"]["chars"] + 2 * (outputs["train"]["documents"] - 1)
    assert train.count(_prose(99, 5000)[:200]) + held.count(_prose(99, 5000)[:200]) == 1  # deduplicated
    assert json.loads((out / "manifest.json").read_text()) == manifest
    # the trainer reads it
    text, source = load_corpus_text(str(out / "train.txt.xz"))
    assert text == train and source.endswith("train.txt.xz")
    # rebuilt from the same inputs: the same bytes
    _build(tmp_path, "c2")
    for name in ("train.txt.xz", "heldout.txt.xz"):
        assert (out / name).read_bytes() == (tmp_path / "c2" / name).read_bytes()


def test_heldout_is_a_hash_threshold():
    assert heldout("00000000" + "f" * 56, 0.01) and not heldout("ffffffff" + "0" * 56, 0.99)
    assert not heldout("80000000" + "0" * 56, 0.5) and heldout("7fffffff" + "0" * 56, 0.5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sources=["python", "web"]), "sources"), (dict(heldout_fraction=1.0), "heldout_fraction"),
    (dict(min_doc_chars=10, max_doc_chars=5), "min_doc_chars"),
])
def test_bad_settings_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CorpusConfig(**kwargs)


def test_missing_debs_say_how_to_fetch(tmp_path):
    cfg = CorpusConfig(sources=["debian"], out_dir=str(tmp_path / "o"), deb_dir=str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="fetch_corpus_debs"):
        build_corpus(cfg, progress=False)


def test_deb_skip_rules_and_wordnet_glosses(tmp_path):
    data_noun = ("  1 This software and database is being provided ... license header\n"
                 "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived to have its own "
                 "distinct existence\n"
                 "00002137 03 n 02 abstraction 0 abstract_entity 0 010 | a general concept formed by extracting "
                 "common features\n")
    deb = tmp_path / "w_1_all.deb"
    _deb(deb, "w", {
        "./usr/share/wordnet/data.noun": data_noun.encode(),
        "./usr/share/wordnet/index.noun": b"entity n 1 1 @ 1 0 00001740",
        "./usr/share/doc/linux-doc-6.1/html/a.html": b"<p>rendered copy</p>",
        "./usr/share/doc/linux-doc-6.1/Documentation/a.rst": b"Source text",
        "./usr/share/doc/linux-doc-6.1/Documentation/translations/it_IT/a.rst": b"Testo",
        "./usr/share/doc/debian-handbook/html/fr-FR/index.html": b"<p>Bonjour</p>",
        "./usr/share/doc/debian-handbook/html/en-US/index.html": b"<p>Hello</p>",
    })
    docs, _ = deb_documents(deb)
    by_origin = {d.origin.split("/", 1)[1]: d.text for d in docs}
    assert set(by_origin) == {"usr/share/wordnet/data.noun", "usr/share/doc/linux-doc-6.1/Documentation/a.rst",
                              "usr/share/doc/debian-handbook/html/en-US/index.html"}
    assert by_origin["usr/share/wordnet/data.noun"].splitlines() == [
        "entity (noun): that which is perceived to have its own distinct existence",
        "abstraction, abstract entity (noun): a general concept formed by extracting common features"]
    assert len(deb_documents(deb, skip=())[0]) == 7


def test_trainer_reads_several_corpus_files(tmp_path):
    a, b = tmp_path / "a.txt.xz", tmp_path / "b.txt"
    a.write_bytes(lzma.compress(b"first corpus"))
    b.write_text("second corpus")
    text, source = load_corpus_text(f"{a},{b}")
    assert text == "first corpus\n\nsecond corpus" and source == f"{a},{b}"
    with pytest.raises(FileNotFoundError, match="corpus: no file"):
        load_corpus_text(str(tmp_path / "missing.txt.xz"))


def test_tokenizer_keeps_newlines_apart():
    """A blank line tokenizes the same alone (a template's end, token-space task samples) and before text (the
    evaluation's prompt), even when the corpus is full of paragraphs."""
    from pbs.train.data import train_tokenizer

    # blank lines before indented lines (code, the kernel's docs): byte-level BPE then learns a "\n\n" merge
    text = "\n\n    ".join(f"Paragraph {i} says the river runs to the sea." for i in range(3000))
    tok = train_tokenizer(text, vocab_size=400)

    def ids(s):
        return tok(s, add_special_tokens=False).input_ids

    assert ids("the sea.\n\n") + ids("There") == ids("the sea.\n\nThere")
    assert ids("x\n\n\n") == ids("x\n") + ids("\n") + ids("\n")
