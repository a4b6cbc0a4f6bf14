"""The report's inline stylesheet: system fonts only, nothing fetched."""

CSS = """
:root { --ink: #212529; --muted: #6c757d; --line: #dee2e6; --soft: #f8f9fa;
        --ok: #2b8a3e; --warn: #b35c00; --bad: #c92a2a; }
* { box-sizing: border-box; }
body { margin: 0; background: #f1f3f5; color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 28px 40px; }
header h1 { margin: 0; font-size: 26px; letter-spacing: -0.01em; }
.meta { margin: 4px 0 0; color: var(--muted); }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 18px 22px;
          margin-top: 20px; }
h2 { margin: 0 0 6px; font-size: 19px; }
h3 { margin: 18px 0 6px; font-size: 15px; }
.note { color: var(--muted); margin: 2px 0 10px; font-size: 13px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(100px, 1fr)); gap: 10px;
         margin: 10px 0 16px; }
.card { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.card .value { font-size: 21px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .label { color: var(--muted); font-size: 12px; }
.card.bad { border-color: #ffc9c9; background: #fff5f5; }
.card.bad .value { color: var(--bad); }
table { border-collapse: collapse; width: 100%; margin: 8px 0; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fcfcfd; }
table.compact { width: auto; min-width: 40%; }
.reliability { display: flex; flex-wrap: wrap; gap: 24px; }
.reliability figure { margin: 0; }
.reliability figcaption { font-size: 12px; color: #495057; text-align: center; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.summary td { font-size: 14px; }
.why { color: #495057; }
.pill { display: inline-block; min-width: 44px; text-align: center; border-radius: 10px; padding: 0 8px;
        font-weight: 600; background: #e9ecef; }
.pill.ok { background: #d3f9d8; color: var(--ok); }
.pill.warn { background: #fff3bf; color: var(--warn); }
.pill.bad { background: #ffe3e3; color: var(--bad); }
span.ok { color: var(--ok); } span.warn { color: var(--warn); } span.bad { color: var(--bad); font-weight: 600; }
.tag { display: inline-block; font-size: 11px; border-radius: 4px; padding: 0 5px; background: #e9ecef;
       color: #495057; margin-left: 4px; }
.tag.warn { background: #fff3bf; color: var(--warn); margin-left: 0; }
.ex { color: var(--muted); font-size: 12px; word-break: break-word; }
.fields td:nth-child(2), .fields td:nth-child(3) { white-space: nowrap; }
.fields td:nth-child(3) { font-size: 12px; color: #495057; }
ul.issues { margin: 10px 0 0; padding-left: 20px; color: var(--bad); }
ul.explain { padding-left: 18px; } ul.explain ul { padding-left: 18px; color: #495057; }
svg { display: block; margin: 4px 0 8px; }
footer { color: var(--muted); text-align: center; margin-top: 24px; font-size: 12px; }
@media print { body { background: #fff; } section { break-inside: avoid; border: none; } }
"""
