// A layered layout for graphs too large for ELK to lay out in the browser in good time (ELK's layered algorithm takes
// tens of seconds on an expanded fan-out of hundreds of siblings): layers by longest path, siblings ordered by their
// parents' place, and a wide layer wrapped into rows. Its answer has ELK's shape, so the view draws either.

/** Nodes in one row of a layer before it wraps. */
const WRAP = 16;
const GAP_CROSS = 28;
const GAP_LAYER = 64;
const GAP_WRAP = 22;
const PAD = 28;

/**
 * Lays out `children` (`{id, width, height}`, all the same size, in topological order) joined by `edges`
 * (`{id, sources: [from], targets: [to]}`), top down (DOWN) or left to right (RIGHT).
 */
export function fastLayout(children, edges, direction) {
  const down = direction !== "RIGHT";
  const w = children[0]?.width ?? 0;
  const h = children[0]?.height ?? 0;
  const main = down ? h : w;
  const cross = down ? w : h;
  const parents = new Map(children.map((c) => [c.id, []]));
  for (const e of edges) parents.get(e.targets[0])?.push(e.sources[0]);

  // Longest path from a root; an id seen while being computed (a cycle, which a DAG has not) counts as a root.
  const layerOf = new Map();
  const visiting = new Set();
  const layer = (id) => {
    if (layerOf.has(id)) return layerOf.get(id);
    if (visiting.has(id)) return 0;
    visiting.add(id);
    let value = 0;
    for (const p of parents.get(id) ?? []) value = Math.max(value, layer(p) + 1);
    visiting.delete(id);
    layerOf.set(id, value);
    return value;
  };
  const layers = [];
  for (const c of children) {
    const l = layer(c.id);
    if (!layers[l]) layers[l] = [];
    layers[l].push(c.id);
  }

  // Each layer ordered by the mean place of its parents (stable: model order breaks ties), then cut into rows.
  const place = new Map();
  const rows = [];
  for (const ids of layers) {
    if (!ids) continue;
    const keyed = ids.map((id, i) => {
      const ps = (parents.get(id) ?? []).filter((p) => place.has(p));
      const mean = ps.length === 0 ? i : ps.reduce((sum, p) => sum + place.get(p), 0) / ps.length;
      return { id, mean, i };
    });
    keyed.sort((a, b) => a.mean - b.mean || a.i - b.i);
    const layerRows = [];
    for (let start = 0; start < keyed.length; start += WRAP) layerRows.push(keyed.slice(start, start + WRAP));
    for (const [r, row] of layerRows.entries()) {
      for (const [j, item] of row.entries()) place.set(item.id, j + (row.length < WRAP ? (WRAP - row.length) / 2 : 0));
      rows.push({ items: row.map((k) => k.id), firstOfLayer: r === 0 });
    }
  }

  const widest = Math.max(1, ...rows.map((r) => r.items.length));
  const crossSpan = widest * cross + (widest - 1) * GAP_CROSS;
  const pos = new Map();
  let along = PAD;
  for (const [r, row] of rows.entries()) {
    if (r > 0) along += row.firstOfLayer ? GAP_LAYER : GAP_WRAP;
    const span = row.items.length * cross + (row.items.length - 1) * GAP_CROSS;
    let across = PAD + (crossSpan - span) / 2;
    for (const id of row.items) {
      pos.set(id, down ? { x: across, y: along } : { x: along, y: across });
      across += cross + GAP_CROSS;
    }
    along += main;
  }
  const size = { main: along + PAD, cross: crossSpan + 2 * PAD };

  return {
    width: down ? size.cross : size.main,
    height: down ? size.main : size.cross,
    children: children.map((c) => ({ id: c.id, ...pos.get(c.id) })),
    edges: edges.map((e) => {
      const from = pos.get(e.sources[0]);
      const to = pos.get(e.targets[0]);
      // Out of the parent's far side, into the child's near side, with a bend just before the child's row.
      const start = down ? { x: from.x + w / 2, y: from.y + h } : { x: from.x + w, y: from.y + h / 2 };
      const end = down ? { x: to.x + w / 2, y: to.y } : { x: to.x, y: to.y + h / 2 };
      const bend = down ? end.y - GAP_WRAP / 2 - 4 : end.x - GAP_WRAP / 2 - 4;
      const bendPoints = down
        ? [
            { x: start.x, y: bend },
            { x: end.x, y: bend },
          ]
        : [
            { x: bend, y: start.y },
            { x: bend, y: end.y },
          ];
      return {
        id: e.id,
        sources: e.sources,
        targets: e.targets,
        sections: [{ startPoint: start, bendPoints, endPoint: end }],
      };
    }),
  };
}
