#!/usr/bin/env python3
"""Counts which parts of actix-kv-session's public API have a runnable example in their docs.

Builds the docs (`cargo doc -p actix-kv-session --no-deps --all-features`, or reads the
existing ones with `--no-build`), then counts from rustdoc's HTML:

- item pages: every struct, enum, trait, function, macro, derive, type alias and constant
  that `all.html` lists, with and without a Rust example in the item's own doc block;
- members: the public methods, associated functions and associated constants documented on
  those pages (a type's inherent impls, a trait's required and provided items), with and
  without a Rust example in their own doc block.

It prints both counts and lists what has none, with the source file and line:

    scripts/doc_coverage.py                # build the docs, then count
    scripts/doc_coverage.py --no-build     # count the docs in target/doc as they are
    scripts/doc_coverage.py --check        # exit 1 if anything lacks an example
    scripts/doc_coverage.py --trait-impls  # also count methods of non-std trait impls

An example is a Rust code block (rustdoc renders it as `<pre class="rust ...">`) that is
tested: blocks marked `ignore` or `compile_fail` do not count, nor do `text` or `toml`
blocks. Not counted: items hidden with `#[doc(hidden)]` (rustdoc leaves them out), methods
reached through `Deref` (counted on their own type's page), and methods of trait impls: a
std trait's (`Debug`, `Clone`, `From`...) are std's to document, and an impl of one of the
crate's traits shows the trait's docs, counted once on the trait's page. `--trait-impls`
adds the impls of traits outside std (the crate's own and actix-web's, say) for a closer
look.

Only the standard library is needed (Python 3.9 or later).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

PACKAGE = "actix-kv-session"
# Elements that never have a closing tag, so the tree below does not wait for one.
VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
}
# The sections of a member that can carry an example; `associatedtype.` is left out.
MEMBER_PREFIXES = ("method.", "tymethod.", "associatedconstant.")


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None = None
    children: list[Element] = field(default_factory=list)
    text: str = ""

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self):
        """This element and everything under it, in document order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, tag: str | None = None, cls: str | None = None, id_: str | None = None):
        return [
            el
            for el in self.walk()
            if (tag is None or el.tag == tag)
            and (cls is None or cls in el.classes)
            and (id_ is None or el.attrs.get("id") == id_)
        ]

    def child(self, tag: str, cls: str | None = None) -> Element | None:
        for el in self.children:
            if el.tag == tag and (cls is None or cls in el.classes):
                return el
        return None

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)


class TreeBuilder(HTMLParser):
    """A minimal DOM: rustdoc's HTML is well formed, so a stack of open elements is enough."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        el = Element(tag, {k: v or "" for k, v in attrs}, parent=self.stack[-1])
        self.stack[-1].children.append(el)
        if tag not in VOID:
            self.stack.append(el)

    def handle_endtag(self, tag):
        # Close up to the matching element; a stray end tag closes nothing.
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        # Text is kept only where it names something (headers); enough for this script.
        self.stack[-1].text += data


def parse(path: Path) -> Element:
    builder = TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    return builder.root


def has_example(docblock: Element | None) -> bool:
    """Whether a doc block holds a tested Rust code block."""
    if docblock is None:
        return False
    for pre in docblock.find_all("pre", cls="rust"):
        wrap = pre.parent
        if wrap is not None and wrap.classes & {"ignore", "compile_fail"}:
            continue
        return True
    return False


def source_of(el: Element | None, crate: str) -> tuple[str, int]:
    """(file, line) from the element's "Source" link: the file relative to the crate's
    `src/`, or under another crate's name (a re-exported derive's `crate_derive/lib.rs`)."""
    if el is not None:
        for a in el.find_all("a", cls="src"):
            # ../src/actix_kv_session/storage/memory/mod.rs.html#120-130
            path, _, lines = a.attrs.get("href", "").partition("#")
            parts = path.split("/src/", 1)[-1].removesuffix(".html").split("/", 1)
            if len(parts) == 2:
                line = int(lines.split("-")[0]) if lines.split("-")[0].isdigit() else 0
                return (parts[1] if parts[0] == crate else "/".join(parts), line)
    return ("?", 0)


@dataclass
class Entry:
    name: str
    source: tuple[str, int]
    example: bool


def item_doc(main: Element) -> Element | None:
    """The item's own doc block: in `<details class="toggle top-doc">`, else (a page without
    the toggle) the first doc block directly in the main content."""
    for details in main.find_all("details", cls="top-doc"):
        return details.child("div", cls="docblock")
    return main.child("div", cls="docblock")


def member_doc(section: Element) -> Element | None:
    """The doc block of a member: `<details><summary><section id=...>` then the block. A
    member without docs has no `<details>` around it."""
    summary = section.parent
    if summary is None or summary.tag != "summary" or summary.parent is None:
        return None
    return summary.parent.child("div", cls="docblock")


def is_std_impl(impl: Element) -> bool:
    """Whether a trait impl's trait is std's: its header section's id names the trait
    (`impl-AsRef%3Cstr%3E-for-SessionId`), and the header links it to doc.rust-lang.org."""
    header = impl.find_all("section", cls="impl")
    found = header and re.match(r"impl-(\w+)", header[0].attrs.get("id", ""))
    if not found:
        return False
    return any(
        a.all_text() == found.group(1) and "doc.rust-lang.org" in a.attrs.get("href", "")
        for a in header[0].find_all("a", cls="trait")
    )


def member_containers(main: Element, trait_impls: bool) -> list[Element]:
    """Where the page's own members are: inherent impls (not `Deref` targets' methods, listed
    apart), a trait's item lists, and with `trait_impls` the impls of traits outside std."""
    containers = main.find_all("div", id_="implementations-list")
    containers += main.find_all("div", cls="methods")
    if trait_impls:
        for listing in main.find_all("div", id_="trait-implementations-list"):
            for impl in listing.find_all("details", cls="implementors-toggle"):
                if not is_std_impl(impl):
                    containers += impl.find_all("div", cls="impl-items")
    return containers


def scan_page(doc_dir: Path, href: str, label: str, trait_impls: bool):
    """The page's item and its members, as `Entry`s."""
    mains = parse(doc_dir / href).find_all("section", id_="main-content")
    if not mains:
        raise SystemExit(f"{href}: no main content; is this a rustdoc page?")
    main, crate = mains[0], doc_dir.name
    kind = href.rsplit("/", 1)[-1].split(".", 1)[0]
    heading = main.find_all("div", cls="main-heading")
    item = Entry(
        f"{kind} {label}",
        source_of(heading[0] if heading else None, crate),
        has_example(item_doc(main)),
    )
    members = []
    for container in member_containers(main, trait_impls):
        for section in container.find_all("section"):
            id_ = section.attrs.get("id", "")
            if id_.startswith(MEMBER_PREFIXES):
                # rustdoc numbers a name that repeats on the page: `method.get_session-1`.
                name = re.sub(r"-\d+$", "", id_.split(".", 1)[1])
                example = has_example(member_doc(section))
                members.append(Entry(f"{label}::{name}", source_of(section, crate), example))
    return item, members


def item_pages(doc_dir: Path) -> list[tuple[str, str]]:
    """(href, path::Name) of every item `all.html` lists: modules have no entry there, and
    re-exports of private modules are listed once, at their public path."""
    root = parse(doc_dir / "all.html")
    pages = []
    for ul in root.find_all("ul", cls="all-items"):
        for a in ul.find_all("a"):
            pages.append((a.attrs["href"], a.all_text()))
    if not pages:
        raise SystemExit(f"{doc_dir / 'all.html'} lists no items")
    return pages


def doc_dir_of(package: str) -> Path:
    metadata = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        check=True,
        capture_output=True,
        text=True,
    )
    target = json.loads(metadata.stdout)["target_directory"]
    return Path(target) / "doc" / package.replace("-", "_")


def report(title: str, entries: list[Entry]) -> int:
    without = sum(not e.example for e in entries)
    with_ = len(entries) - without
    print(f"{title}: {with_} with an example, {without} without ({len(entries)} in all)")
    return without


def main() -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--no-build", action="store_true", help="read the docs in target/doc as they are"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if anything lacks an example"
    )
    parser.add_argument(
        "--trait-impls", action="store_true", help="also count methods of trait impls outside std"
    )
    parser.add_argument(
        "-p", "--package", default=PACKAGE, help=f"the package (default {PACKAGE})"
    )
    args = parser.parse_args()

    if not args.no_build:
        build = ["cargo", "doc", "-p", args.package, "--no-deps", "--all-features", "-q"]
        subprocess.run(build, check=True)
    doc_dir = doc_dir_of(args.package)
    if not (doc_dir / "all.html").is_file():
        raise SystemExit(f"no docs in {doc_dir}: run without --no-build")

    items: list[Entry] = []
    members: list[Entry] = []
    for href, label in item_pages(doc_dir):
        item, its_members = scan_page(doc_dir, href, label, args.trait_impls)
        items.append(item)
        members.extend(its_members)

    missing = report("item pages", items)
    missing += report("members (methods, associated functions and constants)", members)
    for title, entries in (("Item pages", items), ("Members", members)):
        without = sorted((e for e in entries if not e.example), key=lambda e: (e.source, e.name))
        if without:
            print(f"\n{title} without an example:")
            for e in without:
                print(f"  {e.name:<60} {e.source[0]}:{e.source[1]}")
    return 1 if args.check and missing else 0


if __name__ == "__main__":
    sys.exit(main())
