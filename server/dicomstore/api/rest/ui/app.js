// dicomstore's read-only browser page. Each view is a function of the URL hash, which spells
// Google's resource names (#/projects/P/locations/L/datasets/D/dicomStores/S/studies/U/series/V/
// instances/W), so that links and Back work. All data comes from the server's own REST and
// DICOMweb URLs, relative to this page: it is served at <prefix>/ui/, the API at <prefix>/v1/.

const API_ROOT = new URL("../", document.baseURI);
const PAGE_SIZE = 25;
const LEVELS = [
  ["projects", "Project"],
  ["locations", "Location"],
  ["datasets", "Dataset"],
  ["dicomStores", "DICOM store"],
  ["studies", "Study"],
  ["series", "Series"],
  ["instances", "Instance"],
];
const STORE_DEPTH = 4;
const LAST_LOCATION = "dicomstore.ui.location";

// The attributes the lists and headings show, by their DICOM JSON tag.
const TAG = {
  SOPClassUID: "00080016",
  SOPInstanceUID: "00080018",
  StudyDate: "00080020",
  StudyTime: "00080030",
  AccessionNumber: "00080050",
  Modality: "00080060",
  ModalitiesInStudy: "00080061",
  StudyDescription: "00081030",
  SeriesDescription: "0008103E",
  PatientName: "00100010",
  PatientID: "00100020",
  PatientBirthDate: "00100030",
  PatientSex: "00100040",
  StudyInstanceUID: "0020000D",
  SeriesInstanceUID: "0020000E",
  StudyID: "00200010",
  SeriesNumber: "00200011",
  InstanceNumber: "00200013",
  NumberOfStudyRelatedSeries: "00201206",
  NumberOfStudyRelatedInstances: "00201208",
  NumberOfSeriesRelatedInstances: "00201209",
  NumberOfFrames: "00280008",
  Rows: "00280010",
  Columns: "00280011",
};
const PIXEL_DATA_TAGS = ["7FE00008", "7FE00009", "7FE00010"];

const view = document.getElementById("view");
const crumbs = document.querySelector("#crumbs ol");

// --- addresses --------------------------------------------------------------------------------

class AddressError extends Error {}

class Address {
  constructor(ids, params = new URLSearchParams()) {
    this.ids = ids;
    this.params = params;
  }

  static parse(hash) {
    const text = hash.replace(/^#\/?/, "");
    const cut = text.indexOf("?");
    const path = (cut < 0 ? text : text.slice(0, cut)).replace(/\/$/, "");
    const params = new URLSearchParams(cut < 0 ? "" : text.slice(cut + 1));
    const segments = path ? path.split("/") : [];
    const ids = [];
    for (let i = 0; i < segments.length; i += 2) {
      const level = LEVELS[i / 2];
      if (!level || segments[i] !== level[0] || !segments[i + 1]) {
        throw new AddressError(`"${hash}" is not an address this page knows.`);
      }
      try {
        ids.push(decodeURIComponent(segments[i + 1]));
      } catch {
        throw new AddressError(`"${hash}" is not correctly percent-encoded.`);
      }
    }
    if (ids.length === 1) throw new AddressError("An address names a project and a location.");
    return new Address(ids, params);
  }

  get depth() {
    return this.ids.length;
  }

  get id() {
    return this.ids.at(-1);
  }

  child(id) {
    return new Address([...this.ids, id]);
  }

  upTo(depth) {
    return new Address(this.ids.slice(0, depth));
  }

  segments(depth = this.depth) {
    return this.ids.slice(0, depth).flatMap((id, i) => [LEVELS[i][0], id]);
  }

  // Google's resource name, as far as the management API goes (a store at most).
  get name() {
    return this.segments(Math.min(this.depth, STORE_DEPTH)).join("/");
  }

  href(params = {}) {
    const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v != null));
    const path = this.segments().map(encodeURIComponent).join("/");
    return query.toString() ? `#/${path}?${query}` : `#/${path}`;
  }

  api(suffix = "") {
    return apiPath(this.segments(Math.min(this.depth, STORE_DEPTH))) + suffix;
  }

  dicomWeb(...more) {
    const segments = this.segments();
    const store = 2 * STORE_DEPTH;
    return apiPath([...segments.slice(0, store), "dicomWeb", ...segments.slice(store), ...more]);
  }
}

function apiPath(segments) {
  return `v1/${segments.map(encodeURIComponent).join("/")}`;
}

// --- the API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(code, status, message, url) {
    super(message);
    this.code = code;
    this.status = status;
    this.url = url;
  }
}

async function call(path, { params = {}, accept = "application/json", signal } = {}) {
  const url = new URL(path, API_ROOT);
  for (const [key, value] of Object.entries(params)) {
    if (value != null && value !== "") url.searchParams.set(key, value);
  }
  const response = await fetch(url, { headers: { Accept: accept }, signal });
  if (!response.ok) throw await apiError(response, url);
  return response;
}

// Google's error body: {"error": {"code", "message", "status"}}; a proxy's page is not one.
async function apiError(response, url) {
  let status = response.statusText;
  let message = `The server answered ${response.status} ${response.statusText}.`;
  try {
    const { error } = await response.json();
    status = error.status ?? status;
    message = error.message ?? message;
  } catch {
    // not JSON: keep the HTTP status line
  }
  return new ApiError(response.status, status, message, url);
}

async function json(path, options) {
  const response = await call(path, options);
  return response.status === 204 ? null : response.json();
}

// QIDO-RS asks for one more than a page, to know whether a next page exists.
async function search(path, address, includefield, signal) {
  const limit = pageLimit(address);
  const offset = Math.max(0, Number.parseInt(address.params.get("offset"), 10) || 0);
  const found =
    (await json(path, {
      params: { includefield, limit: limit + 1, offset },
      accept: "application/dicom+json",
      signal,
    })) ?? [];
  return { items: found.slice(0, limit), more: found.length > limit, offset, limit };
}

function pageLimit(address) {
  const asked = Number.parseInt(address.params.get("limit"), 10);
  return asked > 0 ? Math.min(asked, 1000) : PAGE_SIZE;
}

let dictionaryLoaded;
function dictionary() {
  dictionaryLoaded ??= call("ui/dictionary.json").then((response) => response.json());
  return dictionaryLoaded;
}

// --- DICOM JSON values ------------------------------------------------------------------------

function values(dataset, tag) {
  return dataset?.[tag]?.Value ?? [];
}

function first(dataset, tag) {
  return values(dataset, tag)[0];
}

function personName(value) {
  const name = value?.Alphabetic ?? value?.Ideographic ?? value?.Phonetic ?? "";
  const [family = "", ...given] = name.split("^");
  const rest = given.filter(Boolean).join(" ");
  return rest ? `${family}, ${rest}` : family;
}

function formatDate(value) {
  const match = /^(\d{4})(\d{2})(\d{2})$/.exec(value ?? "");
  return match ? `${match[1]}-${match[2]}-${match[3]}` : (value ?? "");
}

function formatTime(value) {
  const match = /^(\d{2})(\d{2})?(\d{2})?(\.\d+)?$/.exec(value ?? "");
  if (!match) return value ?? "";
  return [match[1], match[2], match[3]].filter(Boolean).join(":") + (match[4] ?? "");
}

// A value of the metadata table, written as DICOM writes it, multiple values joined by "\".
function formatValue(vr, attribute, names) {
  if (attribute.BulkDataURI) return h("a", { href: attribute.BulkDataURI }, "bulk data");
  if (attribute.InlineBinary != null) {
    return muted(`binary, ${Math.floor((attribute.InlineBinary.length * 3) / 4)} bytes`);
  }
  const items = attribute.Value ?? [];
  if (!items.length) return muted("empty");
  if (vr === "PN") {
    return items
      .map((v) => [v.Alphabetic, v.Ideographic, v.Phonetic].filter(Boolean).join("="))
      .join("\\");
  }
  const text = items.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v)));
  const named = vr === "UI" && items.length === 1 && names.uids[items[0]];
  return named ? [text[0], muted(` (${named})`)] : text.join("\\");
}

function formatCount(value) {
  return value == null ? "" : Number(value).toLocaleString("en");
}

function formatBytes(value) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let size = Number(value ?? 0);
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit ? `${size.toFixed(1)} ${units[unit]}` : `${size} ${units[0]}`;
}

function shortUid(uid) {
  return uid.length > 20 ? `…${uid.slice(-16)}` : uid;
}

// --- building the page ------------------------------------------------------------------------

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : value);
  }
  element.append(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return element;
}

function muted(text) {
  return h("span", { class: "muted" }, text);
}

function uid(text) {
  return h("code", { class: "uid" }, text);
}

function heading(text, ...after) {
  return h("h1", { tabindex: "-1" }, text, ...after);
}

// columns: [label, cell(row), {numeric}]
function table(caption, columns, rows) {
  const cls = (options) => (options?.numeric ? "num" : null);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          columns.map(([label, , options]) =>
            h("th", { scope: "col", class: cls(options) }, label),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h(
            "tr",
            {},
            columns.map(([, cell, options]) => h("td", { class: cls(options) }, cell(row))),
          ),
        ),
      ),
    ),
  );
}

function facts(label, pairs) {
  const shown = pairs.filter(([, value]) => value != null && value !== "");
  return h(
    "dl",
    { class: "facts", "aria-label": label },
    shown.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))),
  );
}

function pageLink(label, href, rel) {
  return href
    ? h("a", { class: "button", href, rel }, label)
    : h("span", { class: "button", "aria-disabled": "true" }, label);
}

function offsetPager(address, page, noun) {
  const { items, more, offset, limit } = page;
  if (!offset && !more) return null;
  const shown = h("span", { role: "status" }, `${noun} ${offset + 1}–${offset + items.length}`);
  const keep = address.params.has("limit") ? { limit } : {};
  const previous = offset > 0 ? { ...keep, offset: Math.max(0, offset - limit) || null } : null;
  return h(
    "nav",
    { class: "pager", "aria-label": `Pages of ${noun}` },
    pageLink("← Previous", previous && address.href(previous), "prev"),
    shown,
    pageLink("Next →", more && address.href({ ...keep, offset: offset + limit }), "next"),
  );
}

function tokenPager(address, nextPageToken, noun) {
  if (!nextPageToken && !address.params.has("pageToken")) return null;
  return h(
    "nav",
    { class: "pager", "aria-label": `Pages of ${noun}` },
    pageLink("← First page", address.params.has("pageToken") && address.href(), "first"),
    pageLink("Next →", nextPageToken && address.href({ pageToken: nextPageToken }), "next"),
  );
}

function errorBox(error) {
  if (error instanceof ApiError) {
    return h(
      "div",
      { class: "error", role: "alert" },
      h("h2", {}, `${error.code} ${error.status}`),
      h("p", {}, error.message),
      h(
        "p",
        { class: "muted" },
        "GET ",
        h("code", {}, readable(error.url.pathname + error.url.search)),
      ),
    );
  }
  if (error instanceof AddressError) {
    return h(
      "div",
      { class: "error", role: "alert" },
      h("h2", {}, "Unknown address"),
      h("p", {}, error.message),
      h("p", {}, h("a", { href: "#/" }, "Start again")),
    );
  }
  // fetch() fails with a TypeError when no answer came at all.
  const what =
    error instanceof TypeError ? "The server could not be reached" : "Something went wrong";
  return h(
    "div",
    { class: "error", role: "alert" },
    h("h2", {}, what),
    h("p", {}, String(error.message ?? error)),
  );
}

function readable(url) {
  try {
    return decodeURI(url);
  } catch {
    return url;
  }
}

// --- views: one per depth of the address ------------------------------------------------------

function homeView() {
  let last = {};
  try {
    last = JSON.parse(localStorage.getItem(LAST_LOCATION)) ?? {};
  } catch {
    // no storage: start empty
  }
  const field = (label, name, value) =>
    h(
      "p",
      {},
      h("label", { for: name }, label),
      h("input", { id: name, name, value: value ?? "", required: true, autocomplete: "off" }),
    );
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(form);
        location.hash = new Address([data.get("project"), data.get("location")]).href();
      },
    },
    field("Project", "project", last.project),
    field("Location", "location", last.location),
    h("button", { type: "submit" }, "Show datasets"),
  );
  return [
    heading("Browse DICOM stores"),
    h(
      "p",
      {},
      "Datasets live in a project and a location, as in Google's API: ",
      h("code", {}, "projects/PROJECT/locations/LOCATION"),
      ". This page only reads; nothing here changes the store.",
    ),
    form,
  ];
}

async function locationView(address, signal) {
  const [project, place] = address.ids;
  try {
    localStorage.setItem(LAST_LOCATION, JSON.stringify({ project, location: place }));
  } catch {
    // no storage: nothing to remember
  }
  const page = await json(address.api("/datasets"), {
    params: { pageSize: PAGE_SIZE, pageToken: address.params.get("pageToken") },
    signal,
  });
  const datasets = page?.datasets ?? [];
  const idOf = (dataset) => dataset.name.split("/").at(-1);
  return [
    heading("Datasets"),
    h("p", { class: "resource" }, h("code", {}, address.name)),
    datasets.length
      ? table(
          "Datasets",
          [
            ["Dataset", (d) => h("a", { href: address.child(idOf(d)).href() }, idOf(d))],
            ["Time zone", (d) => d.timeZone ?? ""],
          ],
          datasets,
        )
      : h("p", { class: "empty" }, "There are no datasets in this location."),
    tokenPager(address, page?.nextPageToken, "datasets"),
  ];
}

async function datasetView(address, signal) {
  const page = await json(address.api("/dicomStores"), {
    params: { pageSize: PAGE_SIZE, pageToken: address.params.get("pageToken") },
    signal,
  });
  const stores = (page?.dicomStores ?? []).map((store) => {
    const storeAddress = address.child(store.name.split("/").at(-1));
    return { store, address: storeAddress, metrics: metricCells(storeAddress, signal) };
  });
  const metric = (key) => (row) => row.metrics[key];
  return [
    heading(`Dataset ${address.id}`),
    h("p", { class: "resource" }, h("code", {}, address.name)),
    stores.length
      ? table(
          "DICOM stores",
          [
            ["DICOM store", (row) => h("a", { href: row.address.href() }, row.address.id)],
            ["Labels", (row) => labels(row.store.labels)],
            ["Studies", metric("studyCount"), { numeric: true }],
            ["Series", metric("seriesCount"), { numeric: true }],
            ["Instances", metric("instanceCount"), { numeric: true }],
            ["Size", metric("blobStorageSizeBytes"), { numeric: true }],
          ],
          stores,
        )
      : h("p", { class: "empty" }, "There are no DICOM stores in this dataset."),
    tokenPager(address, page?.nextPageToken, "DICOM stores"),
  ];
}

// A store's metrics, which fill in after the table is shown: one request per store.
function metricCells(store, signal) {
  const cells = {};
  for (const key of ["studyCount", "seriesCount", "instanceCount", "blobStorageSizeBytes"]) {
    cells[key] = h("span", {}, muted("…"));
  }
  json(store.api(":getDICOMStoreMetrics"), { signal })
    .then((metrics) => {
      for (const [key, cell] of Object.entries(cells)) {
        const value = metrics[key] ?? "0";
        cell.replaceChildren(key.endsWith("Bytes") ? formatBytes(value) : formatCount(value));
      }
    })
    .catch((error) => {
      if (error.name === "AbortError") return;
      for (const cell of Object.values(cells)) {
        cell.replaceChildren(h("span", { class: "muted", title: error.message }, "unavailable"));
      }
    });
  return cells;
}

function labels(map) {
  const entries = Object.entries(map ?? {});
  if (!entries.length) return muted("none");
  return h(
    "ul",
    { class: "labels" },
    entries.map(([key, value]) => h("li", {}, value ? `${key}: ${value}` : key)),
  );
}

async function storeView(address, signal) {
  const [metrics, page] = await Promise.all([
    json(address.api(":getDICOMStoreMetrics"), { signal }),
    search(address.dicomWeb("studies"), address, "StudyDescription", signal),
  ]);
  const link = (study) => {
    const text =
      first(study, TAG.StudyDescription) ||
      (first(study, TAG.StudyID) && `Study ${first(study, TAG.StudyID)}`) ||
      shortUid(first(study, TAG.StudyInstanceUID));
    return h("a", { href: address.child(first(study, TAG.StudyInstanceUID)).href() }, text);
  };
  return [
    heading(`DICOM store ${address.id}`),
    h("p", { class: "resource" }, h("code", {}, address.name)),
    facts("Store metrics", [
      ["Studies", formatCount(metrics.studyCount ?? 0)],
      ["Series", formatCount(metrics.seriesCount ?? 0)],
      ["Instances", formatCount(metrics.instanceCount ?? 0)],
      ["Stored size", formatBytes(metrics.blobStorageSizeBytes)],
      ["Metadata size", formatBytes(metrics.structuredStorageSizeBytes)],
    ]),
    page.items.length
      ? [
          table(
            "Studies",
            [
              ["Study", link],
              ["Patient", (s) => personName(first(s, TAG.PatientName))],
              ["Patient ID", (s) => first(s, TAG.PatientID) ?? ""],
              ["Date", (s) => formatDate(first(s, TAG.StudyDate))],
              ["Accession", (s) => first(s, TAG.AccessionNumber) ?? ""],
              ["Modalities", (s) => values(s, TAG.ModalitiesInStudy).join(", ")],
              [
                "Series",
                (s) => formatCount(first(s, TAG.NumberOfStudyRelatedSeries)),
                { numeric: true },
              ],
              [
                "Instances",
                (s) => formatCount(first(s, TAG.NumberOfStudyRelatedInstances)),
                { numeric: true },
              ],
            ],
            page.items,
          ),
          offsetPager(address, page, "Studies"),
        ]
      : h(
          "p",
          { class: "empty" },
          page.offset ? "No more studies." : "There are no studies in this store.",
        ),
  ];
}

async function studyView(address, signal) {
  const [found, page] = await Promise.all([
    json(address.upTo(STORE_DEPTH).dicomWeb("studies"), {
      params: { StudyInstanceUID: address.id, includefield: "StudyDescription" },
      accept: "application/dicom+json",
      signal,
    }),
    search(address.dicomWeb("series"), address, "SeriesNumber,SeriesDescription", signal),
  ]);
  const study = found?.[0];
  if (!study) throw notInStore(address, "study");
  const link = (series) => {
    const number = first(series, TAG.SeriesNumber);
    const text =
      first(series, TAG.SeriesDescription) ||
      (number != null ? `Series ${number}` : shortUid(first(series, TAG.SeriesInstanceUID)));
    return h("a", { href: address.child(first(series, TAG.SeriesInstanceUID)).href() }, text);
  };
  return [
    heading(first(study, TAG.StudyDescription) || "Study"),
    facts("Study", [
      ["Patient", personName(first(study, TAG.PatientName))],
      ["Patient ID", first(study, TAG.PatientID)],
      ["Birth date", formatDate(first(study, TAG.PatientBirthDate))],
      ["Sex", first(study, TAG.PatientSex)],
      [
        "Study date",
        [formatDate(first(study, TAG.StudyDate)), formatTime(first(study, TAG.StudyTime))]
          .join(" ")
          .trim(),
      ],
      ["Accession", first(study, TAG.AccessionNumber)],
      ["Study UID", uid(address.id)],
    ]),
    table(
      "Series",
      [
        ["Series", link],
        ["Number", (s) => first(s, TAG.SeriesNumber) ?? "", { numeric: true }],
        ["Modality", (s) => first(s, TAG.Modality) ?? ""],
        [
          "Instances",
          (s) => formatCount(first(s, TAG.NumberOfSeriesRelatedInstances)),
          { numeric: true },
        ],
      ],
      page.items,
    ),
    offsetPager(address, page, "Series"),
  ];
}

async function seriesView(address, signal) {
  const [found, page, names] = await Promise.all([
    json(address.upTo(STORE_DEPTH + 1).dicomWeb("series"), {
      params: { SeriesInstanceUID: address.id, includefield: "SeriesNumber,SeriesDescription" },
      accept: "application/dicom+json",
      signal,
    }),
    search(
      address.dicomWeb("instances"),
      address,
      "InstanceNumber,Rows,Columns,NumberOfFrames",
      signal,
    ),
    dictionary(),
  ]);
  const series = found?.[0];
  if (!series) throw notInStore(address, "series");
  const link = (instance) => {
    const number = first(instance, TAG.InstanceNumber);
    const id = first(instance, TAG.SOPInstanceUID);
    const text = number != null ? `Instance ${number}` : shortUid(id);
    return h("a", { href: address.child(id).href() }, text);
  };
  const size = (instance) => {
    const columns = first(instance, TAG.Columns);
    return columns ? `${columns} × ${first(instance, TAG.Rows)}` : "";
  };
  const sopClass = (instance) => {
    const value = first(instance, TAG.SOPClassUID) ?? "";
    return names.uids[value] ?? value;
  };
  const number = first(series, TAG.SeriesNumber);
  return [
    heading(
      first(series, TAG.SeriesDescription) || (number != null ? `Series ${number}` : "Series"),
    ),
    facts("Series", [
      ["Modality", first(series, TAG.Modality)],
      ["Series number", number],
      ["Instances", formatCount(first(series, TAG.NumberOfSeriesRelatedInstances))],
      ["Series UID", uid(address.id)],
    ]),
    table(
      "Instances",
      [
        ["Instance", link],
        ["Kind", sopClass],
        ["Size (columns × rows)", size, { numeric: true }],
        [
          "Frames",
          (i) => first(i, TAG.NumberOfFrames) ?? (first(i, TAG.Rows) ? 1 : ""),
          { numeric: true },
        ],
      ],
      page.items,
    ),
    offsetPager(address, page, "Instances"),
  ];
}

async function instanceView(address, signal) {
  const [found, names] = await Promise.all([
    json(address.dicomWeb("metadata"), { accept: "application/dicom+json", signal }),
    dictionary(),
  ]);
  const metadata = found?.[0] ?? {};
  const number = first(metadata, TAG.InstanceNumber);
  const sopClass = first(metadata, TAG.SOPClassUID) ?? "";
  return [
    heading(number != null ? `Instance ${number}` : "Instance"),
    facts("Instance", [
      ["Kind", names.uids[sopClass] ?? sopClass],
      ["Patient", personName(first(metadata, TAG.PatientName))],
      ["Instance UID", uid(address.id)],
    ]),
    h(
      "div",
      { class: "instance" },
      imagePanel(address, metadata, signal),
      h(
        "section",
        { class: "metadata", "aria-labelledby": "metadata-heading" },
        h("h2", { id: "metadata-heading" }, "Metadata"),
        metadataTable(metadata, names),
      ),
    ),
  ];
}

function imagePanel(address, metadata, signal) {
  if (!PIXEL_DATA_TAGS.some((tag) => tag in metadata)) {
    return h(
      "section",
      { class: "image", "aria-labelledby": "image-heading" },
      h("h2", { id: "image-heading" }, "Rendered image"),
      h("p", { class: "empty" }, "This instance has no pixel data to render."),
    );
  }
  const frames = Math.max(1, Number(first(metadata, TAG.NumberOfFrames) ?? 1));
  const asked = Number.parseInt(address.params.get("frame"), 10) || 1;
  const state = {
    frame: Math.min(Math.max(asked, 1), frames),
    format: address.params.get("format") === "png" ? "png" : "jpeg",
  };
  const image = h("img", { alt: "" });
  const caption = h("figcaption", { role: "status" }, "Loading the rendered image…");
  const problem = h("div");
  const frameInput = h("input", {
    id: "frame",
    type: "number",
    min: 1,
    max: frames,
    value: state.frame,
    onchange: () => update({ frame: Math.min(Math.max(Number(frameInput.value) || 1, 1), frames) }),
  });
  const formatSelect = h(
    "select",
    { id: "format", onchange: () => update({ format: formatSelect.value }) },
    h("option", { value: "jpeg", selected: state.format === "jpeg" }, "JPEG"),
    h("option", { value: "png", selected: state.format === "png" }, "PNG"),
  );
  const step = (delta, label, arrow) =>
    h(
      "button",
      {
        type: "button",
        "aria-label": label,
        title: label,
        onclick: () => update({ frame: state.frame + delta }),
      },
      arrow,
    );
  const controls = h(
    "div",
    { class: "controls" },
    frames > 1
      ? h(
          "span",
          {},
          h("label", { for: "frame" }, `Frame (1–${frames})`),
          step(-1, "Previous frame", "←"),
          frameInput,
          step(1, "Next frame", "→"),
        )
      : null,
    h("span", {}, h("label", { for: "format" }, "Format"), formatSelect),
  );

  let shown = null;
  async function load() {
    const { frame, format } = state;
    const path =
      frames > 1
        ? address.dicomWeb("frames", String(frame), "rendered")
        : address.dicomWeb("rendered");
    caption.textContent = `Loading frame ${frame}…`;
    problem.replaceChildren();
    try {
      const response = await call(path, { accept: `image/${format}`, signal });
      const url = URL.createObjectURL(await response.blob());
      if (frame !== state.frame || format !== state.format) {
        URL.revokeObjectURL(url);
        return;
      }
      await new Promise((resolve, reject) => {
        image.onload = resolve;
        image.onerror = () => reject(new Error("the browser could not decode the image"));
        image.src = url;
      });
      if (shown) URL.revokeObjectURL(shown);
      shown = url;
      const kind = format.toUpperCase();
      const size = `${image.naturalWidth} × ${image.naturalHeight} pixels`;
      image.alt = `Frame ${frame} of ${frames}, rendered by the server as ${kind}`;
      caption.textContent = `Frame ${frame} of ${frames} · ${size} · ${kind}`;
    } catch (error) {
      if (error.name === "AbortError") return;
      caption.textContent = `Frame ${frame} could not be rendered.`;
      problem.replaceChildren(errorBox(error));
    }
  }

  function update(change) {
    Object.assign(state, change);
    state.frame = Math.min(Math.max(state.frame, 1), frames);
    frameInput.value = state.frame;
    const params = { frame: state.frame > 1 ? state.frame : null };
    if (state.format !== "jpeg") params.format = state.format;
    history.replaceState(null, "", address.href(params));
    load();
  }

  load();
  return h(
    "section",
    { class: "image", "aria-labelledby": "image-heading" },
    h("h2", { id: "image-heading" }, "Rendered image"),
    controls,
    h("figure", {}, h("div", { class: "frame" }, image), caption),
    problem,
  );
}

function keywordOf(tag, names) {
  const known = names.tags[tag] ?? names.tags[`${tag.slice(0, 2)}XX${tag.slice(4)}`];
  if (known) return known;
  return Number.parseInt(tag.slice(0, 4), 16) % 2 ? "(private)" : "";
}

function metadataTable(metadata, names) {
  const rows = [];
  const walk = (dataset, depth) => {
    for (const [tag, attribute] of Object.entries(dataset)) {
      const row = h(
        "tr",
        {},
        h("td", { class: "tag" }, `(${tag.slice(0, 4)},${tag.slice(4)})`),
        h("td", { class: "keyword" }, keywordOf(tag, names)),
        h("td", {}, attribute.vr ?? ""),
        h(
          "td",
          { class: "value" },
          attribute.vr === "SQ"
            ? muted(`${(attribute.Value ?? []).length} item(s)`)
            : formatValue(attribute.vr, attribute, names),
        ),
      );
      row.style.setProperty("--depth", depth);
      rows.push(row);
      if (attribute.vr !== "SQ") continue;
      (attribute.Value ?? []).forEach((item, index) => {
        const itemRow = h(
          "tr",
          { class: "item" },
          h("td"),
          h("td", { class: "keyword", colspan: 3 }, `Item ${index + 1}`),
        );
        itemRow.style.setProperty("--depth", depth + 0.5);
        rows.push(itemRow);
        walk(item, depth + 1);
      });
    }
  };
  walk(metadata, 0);
  const filter = h("input", {
    id: "metadata-filter",
    type: "search",
    placeholder: "tag, keyword or value",
    oninput: () => {
      const words = filter.value.trim().toLowerCase();
      for (const row of rows) {
        row.hidden = Boolean(words) && !row.textContent.toLowerCase().includes(words);
      }
    },
  });
  return [
    h("p", { class: "filter" }, h("label", { for: "metadata-filter" }, "Filter"), filter),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "aria-labelledby": "metadata-heading" },
        h(
          "colgroup",
          {},
          ["tag", "keyword", "vr", "value"].map((name) => h("col", { class: name })),
        ),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Tag", "Keyword", "VR", "Value"].map((label) => h("th", { scope: "col" }, label)),
          ),
        ),
        h("tbody", {}, rows),
      ),
    ),
  ];
}

function notInStore(address, level) {
  return new ApiError(
    404,
    "NOT_FOUND",
    `The DICOM store ${address.upTo(STORE_DEPTH).name} has no ${level} ${address.id}.`,
    new URL(address.dicomWeb(), API_ROOT),
  );
}

const VIEWS = [
  homeView,
  null,
  locationView,
  datasetView,
  storeView,
  studyView,
  seriesView,
  instanceView,
];

// --- navigation -------------------------------------------------------------------------------

function showCrumbs(address) {
  const items = [h("li", {}, h("a", { href: "#/" }, "Home"))];
  for (let depth = 2; depth <= address.depth; depth += 1) {
    const target = address.upTo(depth);
    const id = target.id;
    const label =
      depth === 2
        ? `${address.ids[0]} / ${id}`
        : `${LEVELS[depth - 1][1]} ${depth > STORE_DEPTH ? shortUid(id) : id}`;
    const current = depth === address.depth;
    items.push(
      h(
        "li",
        {},
        current
          ? h("span", { "aria-current": "page", title: id }, label)
          : h("a", { href: target.href(), title: id }, label),
      ),
    );
  }
  crumbs.replaceChildren(...items);
}

let generation = 0;
let controller = null;

async function render() {
  const mine = ++generation;
  controller?.abort();
  controller = new AbortController();
  const firstRender = mine === 1;
  view.setAttribute("aria-busy", "true");
  let content;
  try {
    const address = Address.parse(location.hash);
    showCrumbs(address);
    content = await VIEWS[address.depth](address, controller.signal);
  } catch (error) {
    if (error.name === "AbortError" || mine !== generation) return;
    if (error instanceof AddressError) showCrumbs(new Address([]));
    content = [heading("This page could not be shown"), errorBox(error)];
  }
  if (mine !== generation) return;
  view.replaceChildren(...[content].flat(Infinity).filter(Boolean));
  view.removeAttribute("aria-busy");
  const title = view.querySelector("h1")?.textContent;
  document.title = title ? `${title} · dicomstore` : "dicomstore";
  if (!firstRender) view.querySelector("h1")?.focus();
}

window.addEventListener("hashchange", render);
render();
