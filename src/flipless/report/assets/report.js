/* flipless report: draws the data of flipless.report (payload.py) into an element.
 *
 * One script for both hosts: the HTML file inlines it and calls render(); the notebook widget
 * appends an `export default` that calls it. Every number is computed in Python; this code lays
 * out, formats for display, filters, sorts and pages. All state lives inside one render() call
 * (nothing global), user strings reach the page only through textContent and setAttribute,
 * images only as checked data:image/png URIs, and nothing is ever loaded from anywhere.
 *
 *   render(el, payload, options) -> {destroy(), selectedPoint()}
 *   payload: the main document (or null: "no results yet")
 *   options.comparison(i): the i-th comparison document
 *   options.selectedPoint: point_id to show first (the widget keeps it across updates)
 */

// The SVG namespace, read from an element the HTML parser makes: keeps URLs out of this file.
const SVG_NS = (() => {
  const holder = document.createElement("div");
  holder.innerHTML = "<svg></svg>"; // a constant; data never goes through innerHTML
  return holder.firstChild.namespaceURI;
})();
const PNG_URI = "data:image/png;base64,";
const PAGE_SIZE = 50;
const REGION_CODE = { regress: 1, progress: 2, common: 0 }; // outcome code & 3
const REGION_TEXT = {
  progress: "progress: old errors only (positive flips)",
  common: "common: wrong both times",
  regress: "regress: new errors only (negative flips)",
};
const METHOD_COLORS = [
  "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
  "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
];

function setProps(node, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  return node;
}

function h(tag, props, children) {
  const node = setProps(document.createElement(tag), props);
  for (const child of children || []) if (child) node.append(child);
  return node;
}

function s(tag, props, children) {
  const node = setProps(document.createElementNS(SVG_NS, tag), props);
  for (const child of children || []) if (child) node.append(child);
  return node;
}

const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
const percent = (v, digits = 2) => (isNumber(v) ? (100 * v).toFixed(digits) + " %" : "n/a");
const integer = (n) => Number(n).toLocaleString("en-US");

function niceTicks(low, high, count) {
  const span = high - low;
  if (!(span > 0)) return [low];
  const raw = span / count;
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  const ratio = raw / magnitude;
  const step = magnitude * (ratio >= 7.5 ? 10 : ratio >= 3.5 ? 5 : ratio >= 1.5 ? 2 : 1);
  const ticks = [];
  for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(t);
  return ticks;
}

function compareKeys(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

function render(root, payload, options) {
  options = options || {};
  root.replaceChildren();
  root.classList.add("flipless-report");
  const handle = {
    destroy() {
      root.replaceChildren();
    },
    selectedPoint() {
      return selectedPoint === null ? null : payload.sweep.points[selectedPoint].point_id;
    },
  };
  let selectedPoint = null;
  if (!payload) {
    root.append(h("p", { class: "fl-empty", text: "No results yet." }));
    return handle;
  }
  const dataset = payload.dataset;
  const tooltip = h("div", { class: "fl-tooltip", role: "tooltip" });
  tooltip.hidden = true;
  const meta = [`flipless ${payload.flipless_version}`];
  if (dataset) meta.push(`${integer(dataset.size)} samples`);
  if (payload.sweep) meta.push(`${payload.sweep.points.length} runs`);
  root.append(
    h("header", { class: "fl-header" }, [
      h("h1", { text: payload.title }),
      h("p", { class: "fl-meta", text: meta.join(" · ") }),
    ])
  );
  const comparisonSection = h("section", { class: "fl-comparison", "aria-live": "polite" });
  let sweep = null;
  if (payload.sweep) {
    sweep = sweepView(payload.sweep, tooltip, root, selectPoint);
    root.append(sweep.section);
  }
  root.append(comparisonSection, tooltip);

  function selectPoint(index) {
    selectedPoint = index;
    sweep.highlight(index);
    const point = payload.sweep.points[index];
    showComparison(point.comparison, `Run ${point.label}`);
  }

  function showComparison(index, heading) {
    comparisonSection.replaceChildren();
    if (index === null || index === undefined) {
      comparisonSection.append(
        h("h2", { text: heading || "Comparison" }),
        h("p", { class: "fl-empty", text: "No comparison is stored for this run." })
      );
      return;
    }
    const data = options.comparison(index);
    comparisonView(comparisonSection, data, dataset, heading || data.label);
  }

  if (payload.sweep) {
    const points = payload.sweep.points;
    let first = points.findIndex((p) => p.point_id === options.selectedPoint);
    if (first < 0) first = points.findIndex((p) => p.comparison === payload.initial);
    if (first < 0) first = 0;
    if (points.length) selectPoint(first);
  } else {
    showComparison(payload.initial, null);
  }
  return handle;
}

/* ------------------------------------------------------------------ the runs of a sweep */

function sweepView(sweep, tooltip, root, onSelect) {
  const section = h("section", { class: "fl-sweep" });
  // The table of runs: by method (in the legend's order), then strength, then seed, until a
  // header is clicked; a second click on it reverses the order.
  const state = { split: sweep.default_split, selected: null, sortKey: "run", sortDir: 1 };
  const plots = h("div", { class: "fl-scatters" });
  const table = h("table", { class: "fl-points" });
  const controls = h("div", { class: "fl-controls" });
  if (sweep.splits.length > 1) {
    const select = h("select", {
      "aria-label": "split",
      onchange: (event) => {
        state.split = event.target.value;
        draw();
      },
    });
    for (const split of sweep.splits) {
      select.append(h("option", { value: split, text: split, selected: split === state.split }));
    }
    controls.append(h("label", { text: "split " }, [select]));
  }
  const legend = h("div", { class: "fl-legend" });
  sweep.methods.forEach((method, i) => {
    const swatch = h("span", { class: "fl-swatch" });
    swatch.style.backgroundColor = METHOD_COLORS[i % METHOD_COLORS.length];
    legend.append(h("span", { class: "fl-legend-item" }, [swatch, document.createTextNode(method)]));
  });
  legend.append(
    h("span", { class: "fl-legend-item" }, [
      h("span", { class: "fl-swatch fl-swatch-front" }),
      document.createTextNode("Pareto front"),
    ]),
    h("span", { class: "fl-legend-item" }, [
      h("span", { class: "fl-swatch fl-swatch-reference" }),
      document.createTextNode("old model's accuracy"),
    ])
  );
  section.append(
    h("h2", { text: "Runs: accuracy against compatibility" }),
    controls,
    plots,
    legend,
    h("div", { class: "fl-scroll" }, [table])
  );

  function describe(index) {
    const point = sweep.points[index];
    const values = sweep.metrics[state.split];
    const lines = [
      `method: ${point.method}`,
      `strength: ${point.strength === null ? "—" : `${point.strength_name || "strength"} = ${point.strength}`}`,
      `seed: ${point.seed === null ? "—" : point.seed}`,
      `accuracy: ${percent(values.accuracy[index])}`,
    ];
    for (const axis of sweep.axes) lines.push(`${axis.label}: ${percent(values[axis.key][index])}`);
    const fronts = sweep.axes.filter((a) => values.pareto[a.key].includes(index)).map((a) => a.label);
    if (fronts.length) lines.push(`Pareto front: ${fronts.join(", ")}`);
    return lines;
  }

  function showTooltip(event, index) {
    tooltip.replaceChildren(...describe(index).map((line) => h("div", { text: line })));
    tooltip.hidden = false;
    // Right of the pointer, or left of it where the report ends (never past its right edge).
    const box = root.getBoundingClientRect();
    const x = event.clientX - box.left;
    const right = x + 14 + tooltip.offsetWidth <= box.width;
    tooltip.style.left = `${right ? x + 14 : Math.max(0, x - 14 - tooltip.offsetWidth)}px`;
    tooltip.style.top = `${event.clientY - box.top + 14}px`;
  }

  function scatter(axis) {
    const values = sweep.metrics[state.split];
    const width = 320, height = 240, left = 52, right = 12, top = 12, bottom = 40;
    const xs = values[axis.key], ys = values.accuracy;
    const shown = sweep.points.map((_, i) => i).filter((i) => isNumber(xs[i]) && isNumber(ys[i]));
    const domain = (list) => {
      let low = Math.min(...list), high = Math.max(...list);
      const pad = high > low ? 0.06 * (high - low) : 0.01;
      return [low - pad, high + pad];
    };
    const yValues = shown.map((i) => ys[i]);
    if (isNumber(values.old_accuracy)) yValues.push(values.old_accuracy);
    const [x0, x1] = shown.length ? domain(shown.map((i) => xs[i])) : [0, 1];
    const [y0, y1] = yValues.length ? domain(yValues) : [0, 1];
    const X = (v) => left + ((v - x0) / (x1 - x0)) * (width - left - right);
    const Y = (v) => height - bottom - ((v - y0) / (y1 - y0)) * (height - top - bottom);
    const plot = s("svg", {
      viewBox: `0 0 ${width} ${height}`,
      class: "fl-scatter",
      role: "group",
      "aria-label": `accuracy against ${axis.label}`,
    });
    plot.append(
      s("line", { x1: left, x2: left, y1: top, y2: height - bottom, class: "fl-axis" }),
      s("line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, class: "fl-axis" })
    );
    for (const t of niceTicks(x0, x1, 4)) {
      plot.append(
        s("line", { x1: X(t), x2: X(t), y1: height - bottom, y2: height - bottom + 4, class: "fl-axis" }),
        s("text", { x: X(t), y: height - bottom + 15, class: "fl-tick", "text-anchor": "middle", text: (100 * t).toFixed(1) })
      );
    }
    for (const t of niceTicks(y0, y1, 4)) {
      plot.append(
        s("line", { x1: left - 4, x2: left, y1: Y(t), y2: Y(t), class: "fl-axis" }),
        s("text", { x: left - 6, y: Y(t) + 3, class: "fl-tick", "text-anchor": "end", text: (100 * t).toFixed(1) })
      );
    }
    const better = axis.higher_is_better ? "higher is better" : "lower is better";
    plot.append(
      s("text", { x: (left + width - right) / 2, y: height - 6, class: "fl-axis-title", "text-anchor": "middle", text: `${axis.label} (%), ${better}` }),
      s("text", { x: 12, y: (top + height - bottom) / 2, class: "fl-axis-title", "text-anchor": "middle", transform: `rotate(-90 12 ${(top + height - bottom) / 2})`, text: "accuracy (%)" })
    );
    if (isNumber(values.old_accuracy)) {
      plot.append(
        s("line", { x1: left, x2: width - right, y1: Y(values.old_accuracy), y2: Y(values.old_accuracy), class: "fl-reference" }),
        s("text", { x: width - right - 2, y: Y(values.old_accuracy) - 4, class: "fl-tick", "text-anchor": "end", text: "old model" })
      );
    }
    const front = values.pareto[axis.key].filter((i) => shown.includes(i)).sort((a, b) => xs[a] - xs[b]);
    if (front.length > 1) {
      plot.append(s("polyline", { class: "fl-front-line", points: front.map((i) => `${X(xs[i])},${Y(ys[i])}`).join(" ") }));
    }
    for (const i of shown) {
      const dot = s("circle", {
        cx: X(xs[i]),
        cy: Y(ys[i]),
        r: 5,
        class: "fl-point" + (front.includes(i) ? " fl-front" : "") + (i === state.selected ? " fl-selected" : ""),
        fill: METHOD_COLORS[sweep.points[i].method_index % METHOD_COLORS.length],
        tabindex: 0,
        role: "button",
        "data-point": i,
        "aria-label": describe(i).join("; "),
        onclick: () => onSelect(i),
        onkeydown: (event) => {
          if (event.key === "Enter" || event.key === " ") onSelect(i);
        },
        onmousemove: (event) => showTooltip(event, i),
        onmouseleave: () => {
          tooltip.hidden = true;
        },
      });
      plot.append(dot);
    }
    return plot;
  }

  // Runs in their default order: method (legend order), strength, seed; none before a value.
  function byRun(a, b) {
    const [p, q] = [sweep.points[a], sweep.points[b]];
    const missingFirst = (x, y) => (x === null) - (y === null) || (x === null ? 0 : x - y);
    return p.method_index - q.method_index || missingFirst(p.strength, q.strength) || missingFirst(p.seed, q.seed) || a - b;
  }

  // Row order for the sort state; a metric's undefined values stay last in both directions.
  function runOrder() {
    const order = sweep.points.map((_, i) => i).sort(byRun);
    if (state.sortKey === "run") return state.sortDir > 0 ? order : order.reverse();
    const values = sweep.metrics[state.split][state.sortKey];
    return order.sort((a, b) => {
      const [x, y] = [values[a], values[b]];
      if (!isNumber(x) || !isNumber(y)) return !isNumber(x) - !isNumber(y) || byRun(a, b);
      return state.sortDir * (x - y) || byRun(a, b);
    });
  }

  function sortHeader(key, label) {
    const sorted = state.sortKey === key;
    return h("th", { scope: "col", "aria-sort": sorted ? (state.sortDir > 0 ? "ascending" : "descending") : "none" }, [
      h("button", {
        type: "button",
        class: "fl-sort",
        "data-column": key,
        text: label + (sorted ? (state.sortDir > 0 ? " ▲" : " ▼") : ""),
        onclick: () => {
          state.sortDir = state.sortKey === key ? -state.sortDir : 1;
          state.sortKey = key;
          pointsTable();
        },
      }),
    ]);
  }

  function pointsTable() {
    const values = sweep.metrics[state.split];
    const head = h("tr", {}, [
      sortHeader("run", "run"),
      sortHeader("accuracy", "accuracy"),
      ...sweep.axes.map((a) => sortHeader(a.key, a.label)),
      h("th", { scope: "col", text: "Pareto front" }),
      h("th", { scope: "col", text: "" }),
    ]);
    const body = h("tbody");
    for (const i of runOrder()) {
      const point = sweep.points[i];
      const fronts = sweep.axes.filter((a) => values.pareto[a.key].includes(i)).map((a) => a.label);
      body.append(
        h("tr", { class: i === state.selected ? "fl-selected" : null, "data-point": i }, [
          h("td", { text: point.label }),
          h("td", { class: "fl-num", text: percent(values.accuracy[i]) }),
          ...sweep.axes.map((a) => h("td", { class: "fl-num", text: percent(values[a.key][i]) })),
          h("td", { text: fronts.join(", ") }),
          h("td", {}, [
            h("button", {
              type: "button",
              text: point.comparison === null ? "no comparison" : "show",
              disabled: point.comparison === null,
              onclick: () => onSelect(i),
            }),
          ]),
        ])
      );
    }
    table.replaceChildren(h("thead", {}, [head]), body);
  }

  function draw() {
    plots.replaceChildren(...sweep.axes.map((axis) => scatter(axis)));
    pointsTable();
  }

  draw();
  return {
    section,
    highlight(index) {
      state.selected = index;
      for (const node of section.querySelectorAll("[data-point]")) {
        node.classList.toggle("fl-selected", Number(node.getAttribute("data-point")) === index);
      }
    },
  };
}

/* -------------------------------------------------------------------- one comparison */

function comparisonView(section, data, dataset, heading) {
  const instances = data.instances && dataset ? data.instances : null;
  const names = data.class_names;
  const state = { filters: new Map(), search: "", showAll: false, sortKey: null, sortDir: 1, page: 0, matches: null };
  const clickable = new Map(); // filter id -> elements that toggle it

  function register(node, filter) {
    if (!instances) return node;
    node.setAttribute("data-filter", filter.id);
    node.classList.add("fl-clickable");
    if (!clickable.has(filter.id)) clickable.set(filter.id, []);
    clickable.get(filter.id).push(node);
    node.addEventListener("click", () => toggle(filter));
    node.addEventListener("keydown", (event) => {
      if ((event.key === "Enter" || event.key === " ") && node.tagName !== "BUTTON") {
        event.preventDefault();
        toggle(filter);
      }
    });
    return node;
  }

  function toggle(filter) {
    const current = state.filters.get(filter.kind);
    if (current && current.id === filter.id) state.filters.delete(filter.kind);
    else state.filters.set(filter.kind, filter);
    changed();
  }

  function changed() {
    state.page = 0;
    state.matches = null;
    for (const [id, nodes] of clickable) {
      const on = [...state.filters.values()].some((f) => f.id === id);
      for (const node of nodes) {
        node.classList.toggle("fl-active", on);
        node.setAttribute("aria-pressed", String(on));
      }
    }
    table.update();
  }

  const regionFilter = (region) => ({
    kind: "venn",
    id: `venn:${region}`,
    label: REGION_TEXT[region],
    test: (i) => (instances.code[i] & 3) === REGION_CODE[region],
  });
  const classFilter = (k) => ({
    kind: "class",
    id: `class:${k}`,
    label: `true class: ${names[k]}`,
    test: (i) => instances.label[i] === k,
  });
  const cellFilter = (a, b) => ({
    kind: "cell",
    id: `cell:${a}:${b}`,
    label: `negative flip ${names[a]} → ${names[b]}`,
    test: (i) => instances.old[i] === a && instances.new[i] === b && (instances.code[i] & 3) === 1,
  });

  section.append(h("h2", { text: heading }));
  const top = h("div", { class: "fl-grid" }, [summaryCard(data.summary), vennCard(data.venn, register, regionFilter)]);
  const middle = h("div", { class: "fl-grid" }, [
    groupCard("Per true class", data.classes, (row) => row.name, (row) => classFilter(row.index), register),
    matrixCard(data.flip_matrix, names, register, cellFilter),
  ]);
  section.append(top, middle);
  data.slices.forEach((slice, index) => {
    const column = dataset ? dataset.metadata.names.indexOf(slice.name) : -1;
    const filterFor = slice.filterable && column >= 0
      ? (row) => ({
          kind: `slice:${index}`,
          id: `slice:${index}:${row.key}`,
          label: `${slice.name} = ${row.key}`,
          test: (i) => dataset.metadata.columns[column][instances.row[i]] === row.key,
        })
      : null;
    const card = groupCard(`Per slice: ${slice.name}`, slice.groups, (row) => row.key, filterFor, register);
    if (!filterFor) {
      card.append(h("p", { class: "fl-note", text: `To filter the table by this slice, pass metadata with a "${slice.name}" column (one value per row) to the report.` }));
    }
    section.append(card);
  });
  const table = instanceTable(data, dataset, instances, state, changed);
  section.append(table.card);
  table.update();
}

function summaryCard(summary) {
  const body = h("tbody");
  for (const row of summary.rows) {
    body.append(
      h("tr", { "data-key": row.key }, [
        h("th", { scope: "row", text: row.label }),
        h("td", { class: "fl-num fl-value", text: row.display }),
        h("td", { class: "fl-num fl-interval", title: row.interval_method, text: row.interval }),
        h("td", { class: "fl-counts", text: row.counts }),
      ])
    );
  }
  const test = summary.mcnemar;
  body.append(
    h("tr", { "data-key": "mcnemar_p" }, [
      h("th", { scope: "row", text: "McNemar p" }),
      h("td", { class: "fl-num fl-value", text: test.display }),
      h("td", {}),
      h("td", { class: "fl-counts", text: `${test.method}, NF ${integer(test.negative_flips)} vs PF ${integer(test.positive_flips)}` }),
    ])
  );
  const level = `${(100 * summary.confidence).toFixed(0)} % interval`;
  return h("div", { class: "fl-card fl-summary" }, [
    h("h3", { text: "Summary" }),
    h("div", { class: "fl-scroll" }, [
      h("table", { class: "fl-summary-table" }, [
        h("thead", {}, [h("tr", {}, ["", "value", level, "counts"].map((t) => h("th", { scope: "col", text: t })))]),
        body,
      ]),
    ]),
  ]);
}

function vennCard(venn, register, regionFilter) {
  const card = h("div", { class: "fl-card fl-venn" }, [h("h3", { text: "Errors of the old and the new model" })]);
  if (venn.old_errors === 0 && venn.new_errors === 0) {
    card.append(h("p", { class: "fl-empty", text: "Neither model made an error." }));
    return card;
  }
  const layout = venn.layout;
  const figure = s("svg", { viewBox: `0 0 ${layout.width} ${layout.height}`, class: "fl-venn-svg", role: "group", "aria-label": "area-proportional Venn diagram of errors" });
  for (const region of ["progress", "regress", "common"]) {
    if (!layout.paths[region]) continue;
    figure.append(
      register(
        s("path", { d: layout.paths[region], class: `fl-region fl-${region}`, "fill-rule": "evenodd", tabindex: 0, role: "button", "data-region": region, "aria-label": `${REGION_TEXT[region]}: ${venn[region]}` }),
        regionFilter(region)
      )
    );
  }
  for (const circle of [layout.old, layout.new]) {
    if (circle.r > 0) figure.append(s("circle", { cx: circle.cx, cy: circle.cy, r: circle.r, class: "fl-outline" }));
  }
  for (const region of ["progress", "regress", "common"]) {
    if (!layout.paths[region]) continue;
    const [x, y] = layout.labels[region];
    figure.append(s("text", { x, y, class: "fl-region-label", "text-anchor": "middle", "dominant-baseline": "middle", "data-region-label": region, text: integer(venn[region]) }));
  }
  const legend = h("div", { class: "fl-venn-legend" });
  for (const region of ["regress", "progress", "common"]) {
    const swatch = h("span", { class: `fl-swatch fl-${region}` });
    const text = region === "common"
      ? `${REGION_TEXT.common}: ${integer(venn.common)} (same wrong answer ${integer(venn.common_same)}, different ${integer(venn.common_different)})`
      : `${REGION_TEXT[region]}: ${integer(venn[region])}`;
    legend.append(register(h("button", { type: "button", class: "fl-legend-button", "data-region": region }, [swatch, document.createTextNode(text)]), regionFilter(region)));
  }
  card.append(
    figure,
    h("p", { class: "fl-caption", text: `Left circle: the old model's ${integer(venn.old_errors)} errors; right: the new model's ${integer(venn.new_errors)}. Areas are proportional to counts.` }),
    legend
  );
  return card;
}

function groupCard(title, rows, nameOf, filterFor, register) {
  const card = h("div", { class: "fl-card fl-groups" }, [h("h3", { text: title })]);
  const bars = h("div", { class: "fl-bars" });
  const totalFlips = rows.reduce((sum, row) => sum + row.negative_flips, 0);
  const lines = rows.map((row) => {
    const name = nameOf(row);
    const track = h("span", { class: "fl-track" });
    const value = h("span", { class: "fl-bar-value" });
    const line = h("button", { type: "button", class: "fl-bar-row", title: `${name}: ${integer(row.support)} samples, ${integer(row.negative_flips)} negative flips, ${integer(row.positive_flips)} positive flips` }, [
      h("span", { class: "fl-bar-label", text: name }),
      track,
      value,
    ]);
    if (filterFor) register(line, filterFor(row));
    else line.disabled = true;
    bars.append(line);
    return { row, track, value };
  });
  function draw() {
    const maxShare = Math.max(...rows.map((r) => r.share_of_negative_flips || 0), 0);
    for (const { row, track, value } of lines) {
      track.replaceChildren();
      if (bars.dataset.view === "accuracy") {
        for (const [which, v] of [["old", row.accuracy_old], ["new", row.accuracy_new]]) {
          const bar = h("span", { class: `fl-bar fl-bar-${which}` });
          bar.style.width = `${isNumber(v) ? 100 * v : 0}%`;
          track.append(bar);
        }
        value.textContent = `${percent(row.accuracy_old, 1)} → ${percent(row.accuracy_new, 1)}`;
      } else {
        const bar = h("span", { class: "fl-bar fl-bar-flips" });
        const share = row.share_of_negative_flips || 0;
        bar.style.width = `${maxShare > 0 ? (100 * share) / maxShare : 0}%`;
        track.append(bar);
        value.textContent = `${integer(row.negative_flips)} (${percent(row.share_of_negative_flips, 1)})`;
      }
    }
  }
  const caption = h("p", { class: "fl-caption" });
  function setView(view) {
    bars.dataset.view = view;
    caption.textContent = view === "accuracy"
      ? "Accuracy of the old (grey) and the new model (blue) per group."
      : `Negative flips per group, as a share of all ${integer(totalFlips)} negative flips.`;
    draw();
  }
  const select = h("select", { "aria-label": "view", class: "fl-view", onchange: (event) => setView(event.target.value) }, [
    h("option", { value: "flips", text: "negative flips (share of all)" }),
    h("option", { value: "accuracy", text: "accuracy old / new" }),
  ]);
  card.append(h("div", { class: "fl-controls" }, [select]));
  card.append(bars, caption);
  setView("flips");
  return card;
}

function matrixCard(matrix, names, register, cellFilter) {
  const size = names.length;
  const card = h("div", { class: "fl-card fl-matrix" }, [h("h3", { text: "Negative flips: old answer → new answer" })]);
  let largest = 0;
  for (const row of matrix) for (const v of row) largest = Math.max(largest, v);
  if (largest === 0) {
    card.append(h("p", { class: "fl-empty", text: "No negative flips." }));
    return card;
  }
  const showNumbers = size <= 30;
  const head = h("tr", {}, [h("th", { scope: "col", class: "fl-corner", text: "old ↓ new →" })]);
  for (const name of names) head.append(h("th", { scope: "col", title: name }, [h("span", { class: "fl-head", text: name })]));
  const body = h("tbody");
  matrix.forEach((row, a) => {
    const line = h("tr", {}, [h("th", { scope: "row", title: names[a] }, [h("span", { class: "fl-head", text: names[a] })])]);
    row.forEach((count, b) => {
      const cell = h("td", { class: a === b ? "fl-cell fl-diagonal" : "fl-cell", title: `${names[a]} → ${names[b]}: ${integer(count)}`, text: showNumbers && count ? integer(count) : "" });
      if (count > 0) {
        cell.style.backgroundColor = `rgba(214, 96, 77, ${(0.15 + (0.85 * count) / largest).toFixed(3)})`;
        cell.setAttribute("tabindex", "0");
        cell.setAttribute("role", "button");
        cell.setAttribute("data-old", a);
        cell.setAttribute("data-new", b);
        register(cell, cellFilter(a, b));
      }
      line.append(cell);
    });
    body.append(line);
  });
  card.append(
    h("div", { class: "fl-scroll" }, [h("table", { class: "fl-heatmap" }, [h("thead", {}, [head]), body])]),
    h("p", { class: "fl-caption", text: "Rows: the old model's (correct) answer; columns: the new model's wrong answer." })
  );
  return card;
}

/* --------------------------------------------------------------------- the instance table */

function outcomeText(code) {
  switch (code & 3) {
    case 1: return "negative flip";
    case 2: return "positive flip";
    case 3: return "both right";
    default: return code & 4 ? "both wrong, same answer" : "both wrong, different answers";
  }
}

function instanceTable(data, dataset, instances, state, changed) {
  const card = h("div", { class: "fl-card fl-instances" }, [h("h3", { text: "Instances" })]);
  if (!instances) {
    card.append(h("p", { class: "fl-empty", text: "This comparison keeps counts only (no per-instance results), so there is no instance table." }));
    return { card, update() {} };
  }
  const names = data.class_names;
  const rowOf = (i) => instances.row[i];
  const columns = [];
  const thumbnails = dataset.thumbnails || {};
  const hasThumbnails = Object.keys(thumbnails).length > 0;
  if (hasThumbnails) columns.push({ key: "thumbnail", label: "", thumbnail: true });
  columns.push({ key: "id", label: "id", text: (i) => dataset.ids[rowOf(i)] });
  if (dataset.texts) columns.push({ key: "text", label: "text", text: (i) => dataset.texts[rowOf(i)], wide: true });
  columns.push({ key: "label", label: "label", text: (i) => names[instances.label[i]], rank: (i) => instances.label[i] });
  columns.push({ key: "old", label: "old answer", text: (i) => names[instances.old[i]], rank: (i) => instances.old[i] });
  if (instances.old_confidence) columns.push({ key: "old_confidence", label: "old conf.", number: (i) => instances.old_confidence[i] });
  columns.push({ key: "new", label: "new answer", text: (i) => names[instances.new[i]], rank: (i) => instances.new[i] });
  if (instances.new_confidence) columns.push({ key: "new_confidence", label: "new conf.", number: (i) => instances.new_confidence[i] });
  columns.push({ key: "outcome", label: "outcome", text: (i) => outcomeText(instances.code[i]), rank: (i) => [1, 2, 0, 3].indexOf(instances.code[i] & 3) * 8 + instances.code[i] });
  dataset.metadata.names.forEach((name, c) => {
    columns.push({ key: `meta:${c}`, label: name, text: (i) => dataset.metadata.columns[c][rowOf(i)] });
  });

  // Every embedded row in ascending order of one column (ties: input order), built once per
  // column; a descending sort reads it backwards, so filtering a sorted table needs no sort.
  const orders = new Map();
  function sortedOrder(column) {
    if (orders.has(column.key)) return orders.get(column.key);
    const n = instances.embedded;
    let keys;
    if (column.number) {
      keys = Float64Array.from({ length: n }, (_, i) => (isNumber(column.number(i)) ? column.number(i) : -Infinity));
    } else if (column.key === "outcome") {
      keys = Float64Array.from({ length: n }, (_, i) => column.rank(i));
    } else if (column.rank) {
      const byName = names.map((_, k) => k).sort((a, b) => compareKeys(names[a], names[b]));
      const position = new Float64Array(names.length);
      byName.forEach((k, p) => { position[k] = p; });
      keys = Float64Array.from({ length: n }, (_, i) => position[column.rank(i)]);
    } else {
      const texts = Array.from({ length: n }, (_, i) => column.text(i));
      const numeric = texts.every((t) => /^-?\d+(\.\d+)?$/.test(t));
      keys = numeric ? Float64Array.from(texts, Number) : texts;
    }
    const order = Int32Array.from({ length: n }, (_, i) => i);
    order.sort((a, b) => compareKeys(keys[a], keys[b]) || a - b);
    orders.set(column.key, order);
    return order;
  }

  let haystack = null;
  function searchText() {
    if (!haystack) {
      const searched = columns.filter((c) => c.text);
      haystack = Array.from({ length: instances.embedded }, (_, i) => searched.map((c) => c.text(i)).join("\u0001").toLowerCase());
    }
    return haystack;
  }

  function matches() {
    if (state.matches) return state.matches;
    const tests = [...state.filters.values()].map((f) => f.test);
    const query = state.search.trim().toLowerCase();
    const texts = query ? searchText() : null;
    const code = instances.code;
    const n = instances.embedded;
    const order = state.sortKey ? sortedOrder(columns.find((c) => c.key === state.sortKey)) : null;
    const kept = new Int32Array(n);
    let size = 0;
    rows: for (let step = 0; step < n; step++) {
      const i = order === null ? step : state.sortDir > 0 ? order[step] : order[n - 1 - step];
      if (!state.showAll && (code[i] & 3) === 3) continue;
      for (let t = 0; t < tests.length; t++) if (!tests[t](i)) continue rows;
      if (texts && !texts[i].includes(query)) continue;
      kept[size++] = i;
    }
    state.matches = kept.subarray(0, size);
    return state.matches;
  }

  const search = h("input", {
    type: "search",
    class: "fl-search",
    placeholder: "search id, label, class, text, metadata",
    "aria-label": "search the instances",
    oninput: (event) => {
      state.search = event.target.value;
      changed();
    },
  });
  const allRows = h("input", {
    type: "checkbox",
    class: "fl-all-rows",
    onchange: (event) => {
      state.showAll = event.target.checked;
      changed();
    },
  });
  const chips = h("div", { class: "fl-chips", "aria-label": "active filters" });
  const count = h("p", { class: "fl-count", "aria-live": "polite" });
  const headRow = h("tr");
  const body = h("tbody");
  const pager = h("div", { class: "fl-pager" });
  const notes = [];
  if (instances.embedded < instances.total) {
    notes.push(h("p", { class: "fl-note", text: `This report embeds ${integer(instances.embedded)} of the ${integer(instances.total)} rows: negative flips first, then positive flips, both wrong, both right.` }));
  }
  card.append(
    h("div", { class: "fl-controls" }, [search, h("label", { class: "fl-toggle" }, [allRows, document.createTextNode(" show all rows (default: flips and errors only)")])]),
    chips,
    count,
    ...notes,
    h("div", { class: "fl-scroll" }, [h("table", { class: "fl-table" }, [h("thead", {}, [headRow]), body])]),
    pager
  );

  function drawHead() {
    headRow.replaceChildren();
    for (const column of columns) {
      if (column.thumbnail) {
        headRow.append(h("th", { scope: "col", text: "" }));
        continue;
      }
      const sorted = state.sortKey === column.key;
      const arrow = sorted ? (state.sortDir > 0 ? " ▲" : " ▼") : "";
      headRow.append(
        h("th", { scope: "col", "aria-sort": sorted ? (state.sortDir > 0 ? "ascending" : "descending") : "none" }, [
          h("button", {
            type: "button",
            class: "fl-sort",
            "data-column": column.key,
            text: column.label + arrow,
            onclick: () => {
              if (state.sortKey === column.key) state.sortDir = -state.sortDir;
              else {
                state.sortKey = column.key;
                state.sortDir = 1;
              }
              changed();
            },
          }),
        ])
      );
    }
  }

  function cell(column, i) {
    if (column.thumbnail) {
      const uri = thumbnails[String(rowOf(i))];
      const td = h("td", { class: "fl-thumb-cell" });
      if (typeof uri === "string" && uri.startsWith(PNG_URI)) {
        td.append(h("img", { class: "fl-thumb", src: uri, alt: `sample ${dataset.ids[rowOf(i)]}` }));
      }
      return td;
    }
    if (column.number) {
      const v = column.number(i);
      return h("td", { class: "fl-num", text: isNumber(v) ? v.toFixed(3) : "" });
    }
    return h("td", { class: column.wide ? "fl-wide" : null, text: column.text(i) });
  }

  function drawChips() {
    chips.replaceChildren();
    for (const filter of state.filters.values()) {
      chips.append(
        h("button", {
          type: "button",
          class: "fl-chip",
          "data-filter": filter.id,
          "aria-label": `remove filter ${filter.label}`,
          text: `${filter.label} ×`,
          onclick: () => {
            state.filters.delete(filter.kind);
            changed();
          },
        })
      );
    }
  }

  function update() {
    const found = matches();
    const pages = Math.max(1, Math.ceil(found.length / PAGE_SIZE));
    state.page = Math.min(Math.max(state.page, 0), pages - 1);
    const first = state.page * PAGE_SIZE;
    const shown = Array.from(found.subarray(first, first + PAGE_SIZE));
    drawHead();
    drawChips();
    count.textContent = `${integer(found.length)} ${found.length === 1 ? "row matches" : "rows match"}`;
    count.setAttribute("data-count", found.length);
    body.replaceChildren(
      ...shown.map((i) =>
        h("tr", { class: `fl-outcome-${instances.code[i] & 3}`, "data-row": rowOf(i) }, columns.map((c) => cell(c, i)))
      )
    );
    const go = (page) => () => {
      state.page = page;
      update();
    };
    pager.replaceChildren(
      h("button", { type: "button", class: "fl-first", text: "«", "aria-label": "first page", disabled: state.page === 0, onclick: go(0) }),
      h("button", { type: "button", class: "fl-prev", text: "‹ previous", disabled: state.page === 0, onclick: go(state.page - 1) }),
      h("span", { class: "fl-page", text: found.length ? `rows ${integer(first + 1)}–${integer(first + shown.length)}, page ${state.page + 1} of ${pages}` : "no rows" }),
      h("button", { type: "button", class: "fl-next", text: "next ›", disabled: state.page >= pages - 1, onclick: go(state.page + 1) }),
      h("button", { type: "button", class: "fl-last", text: "»", "aria-label": "last page", disabled: state.page >= pages - 1, onclick: go(pages - 1) })
    );
  }

  return { card, update };
}
