"""Drawing files for ``ember.viz`` and ``ember viz``: Graphviz's ``dot`` program, the DOT
text of IR graphs (:func:`graph_dot`), and a self-contained HTML view (:func:`html_page`):
pan and zoom, a search box that highlights the ops whose name, op or attributes match, and
a tooltip per op (its op, attributes, shapes, arena offsets, source line), all from the
``tooltip``/``class`` attributes :mod:`ember.ir.dot` writes, with no script from the network.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ember.base import MXNetError
from ember.ir.graph import Graph

FORMATS = ("dot", "svg", "png", "pdf", "html")


# ---- Graphviz -------------------------------------------------------------------------------
def dot_program() -> str:
    """The path of Graphviz's ``dot``; a clear error when it is not installed."""
    path = shutil.which("dot")
    if path is None:
        raise MXNetError("drawing images needs Graphviz's 'dot' program, which is not on PATH: "
                         "install it (Debian/Ubuntu: apt-get install graphviz), or write "
                         ".dot output, which needs nothing")
    return path


def run_dot(source: str, fmt: str, dpi: int | None = None) -> bytes:
    """``source`` laid out and drawn by ``dot -T<fmt>`` (``dpi``: of bitmaps, default 96)."""
    cmd = [dot_program(), f"-T{fmt}"] + ([f"-Gdpi={int(dpi)}"] if dpi else [])
    try:
        proc = subprocess.run(cmd, input=source.encode(),
                              capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise MXNetError("Graphviz's dot ran for more than 120 s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise MXNetError(f"Graphviz's dot failed: {err[-1] if err else proc.returncode}")
    return proc.stdout


_HEAD = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>%TITLE%</title>
<style>html,body{margin:0;height:100%;overflow:hidden;font-family:sans-serif}
#v{width:100%;height:100%;cursor:grab}#v svg{width:100%;height:100%}
#bar{position:fixed;top:4px;left:8px;color:#666;font-size:12px;background:#fffc;padding:2px}
#q{width:18em;font-size:12px}#n{margin:0 8px;color:#000}
#tip{position:fixed;display:none;white-space:pre;background:#ffffe8;border:1px solid #999;
padding:4px 6px;font:11px monospace;pointer-events:none;max-width:70em;z-index:2}
g.node.hit polygon,g.node.hit ellipse,g.node.hit path{stroke:#d00000;stroke-width:3px}
.dim{opacity:.2}</style></head>
<body><div id="bar"><input id="q" type="search" placeholder="search op, name, attribute"
 title="Enter: next match"><span id="n"></span>%TITLE%: wheel to zoom, drag to pan,
 double-click to reset, hover an op for its details</div>
<div id="v">"""

_TAIL = """</div><div id="tip"></div>
<script>
const s=document.querySelector('#v svg');s.removeAttribute('width');s.removeAttribute('height');
const b=s.viewBox.baseVal,o=[b.x,b.y,b.width,b.height];let d=null;
s.addEventListener('wheel',e=>{e.preventDefault();const r=s.getBoundingClientRect(),
k=e.deltaY>0?1.15:1/1.15,px=b.x+(e.clientX-r.left)/r.width*b.width,
py=b.y+(e.clientY-r.top)/r.height*b.height;b.x=px-(px-b.x)*k;b.y=py-(py-b.y)*k;
b.width*=k;b.height*=k;},{passive:false});
s.addEventListener('mousedown',e=>{d=[e.clientX,e.clientY];});
window.addEventListener('mouseup',()=>{d=null;});
window.addEventListener('mousemove',e=>{if(!d)return;const r=s.getBoundingClientRect(),
f=Math.max(b.width/r.width,b.height/r.height);b.x-=(e.clientX-d[0])*f;
b.y-=(e.clientY-d[1])*f;d=[e.clientX,e.clientY];});
s.addEventListener('dblclick',()=>{[b.x,b.y,b.width,b.height]=o;});
// tooltips: the text dot wrote as each node's xlink:title, shown in a box of our own
const XL='http://www.w3.org/1999/xlink',tip=document.getElementById('tip');
const nodes=[...s.querySelectorAll('g.node')],edges=[...s.querySelectorAll('g.edge')];
for(const g of nodes){const a=g.querySelector('a');let t='';
if(a){t=a.getAttributeNS(XL,'title')||'';a.removeAttributeNS(XL,'title');}
g.dataset.tip=t;g.dataset.key=([...g.querySelectorAll('text')].map(x=>x.textContent)
.join(' ')+' '+t).toLowerCase();
g.addEventListener('mousemove',e=>{if(!t)return;tip.textContent=t;tip.style.display='block';
const w=tip.offsetWidth,h=tip.offsetHeight;
tip.style.left=Math.max(0,Math.min(e.clientX+14,innerWidth-w-4))+'px';
tip.style.top=Math.max(0,Math.min(e.clientY+14,innerHeight-h-4))+'px';});
g.addEventListener('mouseleave',()=>{tip.style.display='none';});}
// search: highlight the nodes whose label or details contain the text; Enter: next one
const q=document.getElementById('q'),n=document.getElementById('n');let hits=[],at=-1;
q.addEventListener('input',()=>{const t=q.value.trim().toLowerCase();
hits=t?nodes.filter(g=>g.dataset.key.includes(t)):[];at=-1;
for(const g of nodes){g.classList.toggle('hit',hits.includes(g));
g.classList.toggle('dim',!!t&&!hits.includes(g));}
for(const g of edges)g.classList.toggle('dim',!!t);
n.textContent=t?hits.length+(hits.length==1?' match':' matches'):'';});
q.addEventListener('keydown',e=>{if(e.key!=='Enter'||!hits.length)return;
at=(at+1)%hits.length;const r=hits[at].getBoundingClientRect(),m=s.getScreenCTM().inverse();
const p=s.createSVGPoint();p.x=r.left+r.width/2;p.y=r.top+r.height/2;const c=p.matrixTransform(m);
const k=Math.min(1,r.width*m.a*8/b.width);b.width*=k;b.height*=k;
b.x=c.x-b.width/2;b.y=c.y-b.height/2;n.textContent=(at+1)+' of '+hits.length;});
</script></body></html>
"""


def html_page(svg: str, title: str) -> str:
    """One self-contained page showing ``svg`` with pan, zoom, search and tooltips (no
    network access: no script or style is fetched)."""
    start = svg.find("<svg")
    if start < 0:
        raise MXNetError("dot gave no SVG to embed")
    esc = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _HEAD.replace("%TITLE%", esc) + svg[start:] + _TAIL


def render(source: str, path: str | os.PathLike, fmt: str | None = None,
           dpi: int | None = None) -> Path:
    """Write DOT ``source`` to ``path`` as ``fmt`` (default: the file's extension, one of
    :data:`FORMATS`); ``.dot`` needs nothing, the others Graphviz's ``dot`` (``dpi`` sets
    the resolution of PNG output)."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt == "gv":
        fmt = "dot"
    if fmt not in FORMATS:
        raise MXNetError(f"cannot write {path.name!r}: the format is taken from the extension, "
                         f"one of {', '.join('.' + f for f in FORMATS)}")
    if fmt == "dot":
        data = source.encode()
    elif fmt == "html":
        data = html_page(run_dot(source, "svg").decode(), path.stem).encode()
    else:
        data = run_dot(source, fmt, dpi if fmt == "png" else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def graph_dot(graph: Graph, shapes: bool = True, weights: bool = False,
              collapse: int | str | None = None) -> str:
    """DOT text of an IR graph (:func:`ember.ir.dot.to_dot`; parameters left out unless
    ``weights``, as MXNet's ``plot_network`` does; ``collapse``: a scope depth or a regular
    expression naming the blocks drawn as one box each) with every edge stated at the top
    level: Graphviz makes both ends of an edge written inside a ``subgraph cluster`` members
    of that cluster, which would pull parameters, inputs and the unfused ops around a fused
    group into its box. Only the ops of a group's body stay in its cluster."""
    from ember.ir.dot import to_dot
    try:
        text = to_dot(graph, shapes=shapes, weights=weights, collapse=collapse)
    except ValueError as e:  # a bad --collapse
        raise MXNetError(str(e)) from None
    lines = text.splitlines()
    kept, edges, depth = [], [], 0
    for line in lines:
        text = line.strip()
        if depth > 1 and _EDGE.match(text):
            edges.append("  " + text)
            continue
        depth += text.endswith("{") - (text == "}")
        kept.append(line)
    # cluster titles in the font of the nodes (Graphviz's default is Times)
    kept.insert(1, '  graph [fontname="Helvetica", fontsize=11];')
    return "\n".join(kept[:-1] + edges + kept[-1:]) + "\n"


_EDGE = re.compile(r'("(?:[^"\\]|\\.)*"|[\w.]+)\s*->\s*')
