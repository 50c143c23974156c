"""Open every page of the built book in headless Chromium and check it as a reader sees it.

    python tests/browser_check.py _build/html [--screenshots _build/screenshots]

The site is served on localhost (``http.server``, an unused port) and every ``*.html`` page is
opened with Playwright driving the system Chromium (``/usr/bin/chromium``, the Debian package;
Playwright never downloads a browser here). After MathJax has finished typesetting, each page
must satisfy:

* ``math``: every equation typeset -- each Sphinx math element holds MathJax output, no TeX
  error (``merror``) or undefined macro (shown in red) in it, and no raw ``$$``, ``\\(``,
  ``\\[`` or ``\\begin`` left in the visible text outside code;
* ``image``: every ``<img>`` loaded, with a non-zero natural size;
* ``link`` / ``anchor``: every internal link points to an existing file, and its ``#fragment``
  to an element id (or ``<a name>``) on the target page;
* ``cell-error``: no error output of a notebook cell (traceback), no docutils system message;
* ``stderr``: no stderr output of a cell (a warning the reader would see: fix its cause, or
  silence it in the cell with a comment saying why);
* ``console``: no console error or uncaught exception, no failed or >= 400 request;
* ``external``: no request leaves localhost (the book must read offline).

A full-page screenshot of every page is written under the screenshot folder (mirroring the
page paths). The exit status is 1 when any page fails, and each failure is printed as
``page: [kind] detail``. ``tests/test_browser_check.py`` builds a page that breaks each rule
and checks that every failure is reported.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import posixpath
import re
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

CHROMIUM = "/usr/bin/chromium"
# Flags of the headless run (Playwright adds --headless itself for headless=True; it is listed
# here so that the command line is complete and does not depend on Playwright's defaults).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
# Folders of the built site that hold assets, not pages.
ASSET_DIRS = {"_static", "_sources", "_images", "_downloads", "mathjax", "_sphinx_design_static"}
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 60_000

KINDS = ("math", "image", "link", "anchor", "cell-error", "stderr", "console", "external")


@dataclass(frozen=True)
class Failure:
    page: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: [{self.kind}] {self.detail}"


@dataclass
class PageResult:
    page: str
    equations: int = 0
    images: int = 0
    links: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)


@dataclass
class Report:
    pages: list[PageResult]

    @property
    def failures(self) -> list[Failure]:
        return [f for p in self.pages for f in p.failures]

    def kinds(self, page: str) -> set[str]:
        return {f.kind for f in self.failures if f.page == page}


def list_pages(site: Path) -> list[str]:
    """Every HTML page of the site, as a path relative to it (posix)."""
    pages = []
    for path in sorted(site.rglob("*.html")):
        rel = path.relative_to(site)
        if rel.parts[0] in ASSET_DIRS:
            continue
        pages.append(rel.as_posix())
    return pages


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output readable
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # the browser may drop a connection it no longer needs (a page closed mid-transfer)
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve(site: Path):
    """Serve ``site`` on http://127.0.0.1:<free port>/ for the duration of the block."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# Runs in the page once MathJax has finished: every check that needs the DOM.
_PAGE_JS = r"""
async () => {
  const out = {math: [], images: [], links: [], ids: [], cellErrors: [], stderr: [], equations: 0};
  // --- math ---------------------------------------------------------------------------
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const mathEls = [...document.querySelectorAll('.math')];
  out.equations = mathEls.length;
  const hasMathJax = !!(window.MathJax && MathJax.startup && MathJax.startup.document);
  if (mathEls.length && !hasMathJax) out.math.push(`MathJax did not load; ${mathEls.length} equations left as TeX`);
  for (const el of mathEls) {
    if (!el.querySelector('mjx-container')) {
      out.math.push(`not typeset: ${el.textContent.trim().slice(0, 80)}`);
    }
  }
  if (hasMathJax) {
    for (const item of MathJax.startup.document.math) {
      let mml = '';
      try { mml = MathJax.startup.toMML(item.root); } catch (e) { continue; }
      const tex = String(item.math).trim().slice(0, 80);
      if (mml.includes('<merror')) out.math.push(`TeX error in: ${tex}`);
      else if (/<mtext[^>]*mathcolor="red"[^>]*>\s*\\/.test(mml)) out.math.push(`undefined macro in: ${tex}`);
    }
  }
  // raw TeX left in visible text outside code and typeset math
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight, .MathJax_Preview';
  const raw = [/\$\$/, /\\\(/, /\\\[/, /\\begin\{/, /\$[^$\s][^$]*?[\\^_][^$]*?\$/];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip)) continue;
    const text = node.nodeValue;
    for (const re of raw) {
      const m = text.match(re);
      if (m) {
        const at = Math.max(0, m.index - 20);
        out.math.push(`raw TeX in text: ...${text.slice(at, m.index + 40).replace(/\s+/g, ' ')}...`);
        break;
      }
    }
  }
  // --- images ---------------------------------------------------------------------------
  const imgs = [...document.images];
  for (const img of imgs) img.loading = 'eager';
  await Promise.all(imgs.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done); img.addEventListener('error', done); setTimeout(done, 15000);
  })));
  out.images = imgs.map(img => ({src: img.getAttribute('src') || '', ok: img.complete && img.naturalWidth > 0 && img.naturalHeight > 0}));
  // --- links and anchors -------------------------------------------------------------------
  out.links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  out.ids = [...document.querySelectorAll('[id]')].map(e => e.id)
    .concat([...document.querySelectorAll('a[name]')].map(e => e.getAttribute('name')));
  // --- cell errors and build errors -------------------------------------------------------------
  for (const el of document.querySelectorAll('.cell_output .traceback, .output.traceback, .output.error, .system-message')) {
    const body = (el.querySelector('pre') || el).textContent;
    out.cellErrors.push(body.trim().split('\n').filter(Boolean).slice(-1)[0] || el.className);
  }
  for (const el of document.querySelectorAll('.cell_output .output.stderr')) {
    out.stderr.push(el.textContent.trim().split('\n').filter(Boolean)[0] || 'stderr');
  }
  return out;
}
"""


_REFRESH = re.compile(r'<meta[^>]+http-equiv="refresh"[^>]+url=([^"]+)"', re.IGNORECASE)


def redirect_target(site: Path, rel: str) -> str | None:
    """Where a redirect page (``<meta http-equiv="refresh">``, e.g. the root index.html) leads."""
    head = (site / rel).read_text(encoding="utf8", errors="replace")[:2000]
    m = _REFRESH.search(head)
    if m is None:
        return None
    return posixpath.normpath(posixpath.join(posixpath.dirname(rel), m.group(1).strip()))


def _page_for(url_path: str, pages: set[str]) -> str | None:
    """The page (relative path) a same-site URL path points to, if it is a page."""
    rel = unquote(url_path).lstrip("/")
    if rel == "" or rel.endswith("/"):
        rel += "index.html"
    return rel if rel in pages else None


def _check_one(context, site: Path, base: str, rel: str, page_set: set[str], shots: Path | None):
    """Open one page; return its result, its element ids and the anchors it links to."""
    origin = base.rstrip("/")
    result = PageResult(rel)
    start = time.perf_counter()

    def fail(kind, detail):
        result.failures.append(Failure(rel, kind, detail))

    target = redirect_target(site, rel)
    if target is not None:  # a redirect page: its target must exist (and is checked itself)
        if not (site / target).is_file():
            fail("link", f"redirects to {target} -> no such file")
        return result, set(), []

    events: list[tuple[str, str]] = []

    def on_route(route, request):
        url = request.url
        if url.startswith(origin) or url.startswith(("data:", "blob:", "about:")):
            route.continue_()
        else:
            events.append(("external", f"request to {url} (the book must read offline)"))
            route.abort()

    page = context.new_page()
    page.route("**/*", on_route)
    page.on("console", lambda m: m.type == "error" and events.append(("console", m.text)))
    page.on("pageerror", lambda e: events.append(("console", f"uncaught exception: {e}")))
    page.on("requestfailed", lambda r: r.url.startswith(origin) and events.append(
        ("console", f"request failed: {r.url} ({r.failure})")))
    page.on("response", lambda r: r.status >= 400 and events.append(("console", f"HTTP {r.status} for {r.url}")))
    try:
        page.goto(base + rel, wait_until="load", timeout=TIMEOUT_MS)
        info = page.evaluate(_PAGE_JS)
        if shots is not None:
            png = shots / (rel[: -len(".html")] + ".png")
            png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), full_page=True, animations="disabled")
    except Exception as exc:  # a page that cannot be opened is a failure, not a crash
        fail("console", f"could not check the page: {exc}")
        return result, set(), []
    finally:
        page.close()

    result.equations = info["equations"]
    for msg in info["math"]:
        fail("math", msg)
    result.images = len(info["images"])
    for img in info["images"]:
        if not img["ok"]:
            fail("image", f"not loaded or zero size: {img['src']}")
    for msg in info["cellErrors"]:
        fail("cell-error", msg)
    for msg in info["stderr"]:
        fail("stderr", msg)
    anchors = []
    seen = set()
    for href in info["links"]:
        if not href.startswith(origin) or href in seen:
            continue  # external links are not followed (no internet here)
        seen.add(href)
        url, fragment = urldefrag(href)
        path = urlsplit(url).path
        target_rel = unquote(path).lstrip("/")
        if target_rel == "" or target_rel.endswith("/"):
            target_rel += "index.html"
        if not (site / target_rel).is_file():
            fail("link", f"{href[len(origin):]} -> no such file")
            continue
        target_page = _page_for(path, page_set)
        if fragment and target_page is not None:
            anchors.append((target_page, unquote(fragment)))
    result.links = len(seen)
    for kind, detail in events:
        fail(kind, detail)
    result.seconds = time.perf_counter() - start
    return result, set(info["ids"]), anchors


def _worker(site: Path, base: str, pages: list[str], page_set: set[str], shots: Path | None, log):
    """One headless Chromium (fresh profile) checking a share of the pages in turn."""
    from playwright.sync_api import sync_playwright

    out = []
    with tempfile.TemporaryDirectory(prefix="entk-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,  # a fresh --user-data-dir for every run
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=VIEWPORT,
        )
        try:
            for rel in pages:
                result, ids, anchors = _check_one(context, site, base, rel, page_set, shots)
                out.append((result, ids, anchors))
                status = "ok  " if not result.failures else "FAIL"
                target = redirect_target(site, rel)
                what = (f"redirect to {target}" if target else
                        f"{result.equations} equations, {result.images} images, {result.links} links, "
                        f"{result.seconds:.1f} s")
                log(f"{status} {rel}  ({what})")
        finally:
            context.close()
    return out


def check_site(site: Path | str, screenshots: Path | str | None = None, pages: list[str] | None = None,
               log=print, jobs: int = 2) -> Report:
    """Open every page of ``site`` (or the given ones) and return what failed on each.

    ``jobs`` browsers run side by side, each on a share of the pages (a full-page screenshot
    of a long chapter is the slowest step, and it runs in the browser, not in Python).
    """
    site = Path(site).resolve()
    if not (site / "index.html").exists() and pages is None:
        raise FileNotFoundError(f"{site} has no index.html: build the book first (make html)")
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: install the Debian package `chromium` (make chromium)")
    pages = pages if pages is not None else list_pages(site)
    page_set = set(list_pages(site))
    shots = Path(screenshots) if screenshots is not None else None
    jobs = max(1, min(jobs, len(pages)))
    # Long pages (chapters) first and dealt round-robin, so the shares take similar time.
    order = sorted(pages, key=lambda rel: -(site / rel).stat().st_size)
    shares = [order[i::jobs] for i in range(jobs)]
    with serve(site) as base, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_worker, site, base, share, page_set, shots, log) for share in shares]
        checked = [item for f in futures for item in f.result()]

    by_page = {result.page: result for result, _, _ in checked}
    ids = {result.page: page_ids for result, page_ids, _ in checked}
    for result, _, anchors in checked:
        for target, fragment in anchors:
            if target not in ids:  # a page outside the checked subset: look the id up in its HTML
                html = (site / target).read_text(encoding="utf8", errors="replace")
                ids[target] = {fragment} if (f'id="{fragment}"' in html or f'name="{fragment}"' in html) else set()
            if fragment not in ids[target]:
                result.failures.append(Failure(result.page, "anchor", f"{target}#{fragment} -> no such id"))
    return Report([by_page[rel] for rel in pages])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the built book, e.g. _build/html")
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="folder for one full-page PNG per page (default: SITE/../screenshots)")
    parser.add_argument("--jobs", type=int, default=2, help="browsers side by side (default 2)")
    args = parser.parse_args(argv)
    shots = args.screenshots if args.screenshots is not None else args.site.resolve().parent / "screenshots"
    if shots.exists():  # no stale screenshots of pages that are gone
        shutil.rmtree(shots)
    start = time.perf_counter()
    report = check_site(args.site, shots, jobs=args.jobs)
    failures = report.failures
    print(f"browser check: {len(report.pages)} pages, "
          f"{sum(p.equations for p in report.pages)} equations, {sum(p.images for p in report.pages)} images, "
          f"{sum(p.links for p in report.pages)} internal links, {time.perf_counter() - start:.0f} s; "
          f"screenshots in {shots}")
    if failures:
        print(f"{len(failures)} failure(s):")
        for f in failures:
            print(f"  {f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
