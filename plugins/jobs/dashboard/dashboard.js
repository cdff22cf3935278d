// The jobs dashboard: fills the page from <base>/api/ and keeps it live over SSE.
// Plain JavaScript, no build step; runs under a strict CSP (no inline code, no eval),
// and writes untrusted values only through textContent.
(function () {
  "use strict";

  var STATUSES = ["PENDING", "PROCESSING", "RETRYING", "COMPLETED", "FAILED", "CANCELLED"];
  var RETRYABLE = { FAILED: true, CANCELLED: true };
  var CANCELLABLE = { PENDING: true, RETRYING: true, PROCESSING: true };
  var PAGE = 20;
  var POLL_MS = 5000;
  var SSE_RETRY_MS = 30000;

  var root = document.getElementById("app");
  var base = root.dataset.base;
  var csrf = root.dataset.csrf;
  var $ = function (id) { return document.getElementById(id); };

  var state = {
    status: "",
    type: "",
    cursor: null,
    jobs: new Map(),      // id -> the job each row on screen shows
    latest: new Map(),    // id -> the newest version seen from any source (list, detail, events)
    detail: null,         // the open job's id
    listToken: 0,         // ignores answers to superseded list requests
    source: null,
    pollTimer: null,
    summaryTimer: null
  };

  // -- HTTP -------------------------------------------------------------

  function api(path, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    if (options.method === "POST") headers["X-Plugboard-CSRF"] = csrf;
    return fetch(base + "/api" + path, {
      method: options.method || "GET",
      headers: headers,
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      if (response.status === 401) {
        // The session ended: the page itself now answers with the login form.
        window.location.reload();
        throw new Error("logged out");
      }
      return response.json().then(function (body) {
        if (!response.ok) {
          var error = (body && body.error) || {};
          throw new Error(error.message || response.statusText);
        }
        return body;
      });
    });
  }

  function showError(error) {
    var el = $("error");
    if (!error) {
      el.hidden = true;
      el.textContent = "";
      return;
    }
    el.textContent = String(error.message || error);
    el.hidden = false;
  }

  // -- formatting ---------------------------------------------------------

  function when(iso) {
    if (!iso) return "—";
    var d = new Date(iso);
    return isNaN(d.getTime()) ? iso : d.toLocaleString();
  }

  function pretty(value) {
    if (value === null || value === undefined) return "—";
    return JSON.stringify(value, null, 2);
  }

  function newer(a, b) {
    // True when job a is at least as recent as b (ISO 8601 UTC strings compare as text).
    return !b || (a.updatedAt || "") >= (b.updatedAt || "");
  }

  function freshest(job) {
    // A list or detail answer may be older than an event that overtook it.
    var seen = state.latest.get(job.id);
    if (seen && !newer(job, seen)) return seen;
    if (state.latest.size > 5000) state.latest.clear();
    state.latest.set(job.id, job);
    return job;
  }

  function jobCount(n) {
    return n + (n === 1 ? " job" : " jobs");
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- counts -------------------------------------------------------------

  function buildCounts() {
    var nav = $("counts");
    var select = $("filter-status");
    STATUSES.forEach(function (status) {
      var button = el("button", "count status-" + status);
      button.type = "button";
      button.id = "count-" + status;
      button.dataset.status = status;
      button.appendChild(el("span", "label", status));
      button.appendChild(el("span", "n", "0"));
      button.addEventListener("click", function () {
        setFilter(state.status === status ? "" : status, state.type);
      });
      nav.appendChild(button);
      var option = el("option", "", status);
      option.value = status;
      select.appendChild(option);
    });
  }

  function loadSummary() {
    return api("/summary").then(function (summary) {
      STATUSES.forEach(function (status) {
        var button = $("count-" + status);
        button.querySelector(".n").textContent = String(summary.counts[status] || 0);
        button.classList.toggle("active", state.status === status);
      });
      if (!state.status && !state.type) $("total").textContent = jobCount(summary.total);
      var select = $("filter-type");
      var known = {};
      Array.prototype.forEach.call(select.options, function (o) { known[o.value] = true; });
      summary.types.forEach(function (type) {
        if (!known[type]) {
          var option = el("option", "", type);
          option.value = type;
          select.appendChild(option);
        }
      });
    });
  }

  function refreshSummarySoon() {
    // Many changes arrive in bursts: one summary request per burst.
    if (state.summaryTimer) return;
    state.summaryTimer = setTimeout(function () {
      state.summaryTimer = null;
      loadSummary().catch(showError);
    }, 250);
  }

  // -- the list ---------------------------------------------------------------

  function matches(job) {
    return (!state.status || job.status === state.status) && (!state.type || job.type === state.type);
  }

  function fillRow(row, job) {
    row.className = "status-" + job.status + (state.detail === job.id ? " selected" : "");
    row.dataset.status = job.status;
    var cells = row.children;
    cells[0].firstChild.textContent = job.status;
    cells[0].firstChild.className = "status status-" + job.status;
    cells[1].textContent = job.type;
    cells[2].firstChild.value = job.progress;
    cells[2].lastChild.textContent = job.progress + "%";
    cells[3].textContent = job.attempts + " / " + job.maxAttempts;
    cells[4].textContent = when(job.createdAt);
    cells[4].title = job.createdAt || "";
    cells[5].textContent = job.id.slice(0, 8) + "…";
    cells[5].title = job.id;
  }

  function makeRow(job) {
    var row = el("tr");
    row.dataset.id = job.id;
    row.tabIndex = 0;
    var statusCell = el("td");
    statusCell.appendChild(el("span", "status"));
    var progressCell = el("td", "progress");
    var bar = el("progress");
    bar.max = 100;
    progressCell.appendChild(bar);
    progressCell.appendChild(el("span", "percent"));
    row.appendChild(statusCell);
    row.appendChild(el("td", "type"));
    row.appendChild(progressCell);
    row.appendChild(el("td", "attempts"));
    row.appendChild(el("td", "created"));
    row.appendChild(el("td", "id mono"));
    row.addEventListener("click", function () { openDetail(job.id); });
    row.addEventListener("keydown", function (event) {
      if (event.key === "Enter") openDetail(job.id);
    });
    fillRow(row, job);
    return row;
  }

  function rowFor(id) {
    return document.querySelector('#jobs tbody tr[data-id="' + CSS.escape(id) + '"]');
  }

  function updateEmpty() {
    $("empty").hidden = state.jobs.size > 0;
  }

  function loadList(append) {
    var token = ++state.listToken;
    var params = new URLSearchParams({ first: String(PAGE) });
    if (state.status) params.set("status", state.status);
    if (state.type) params.set("type", state.type);
    if (append && state.cursor) params.set("after", state.cursor);
    return api("/jobs?" + params.toString()).then(function (page) {
      if (token !== state.listToken) return;
      var body = document.querySelector("#jobs tbody");
      if (!append) {
        body.textContent = "";
        state.jobs.clear();
      }
      page.jobs.forEach(function (job) {
        job = freshest(job);
        if (!matches(job)) return;
        var known = state.jobs.get(job.id);
        if (known) {
          if (newer(job, known)) {
            state.jobs.set(job.id, job);
            fillRow(rowFor(job.id), job);
          }
          return;
        }
        state.jobs.set(job.id, job);
        body.appendChild(makeRow(job));
      });
      state.cursor = page.endCursor;
      $("more").hidden = !page.hasNextPage;
      $("total").textContent = jobCount(page.totalCount);
      updateEmpty();
      showError(null);
    });
  }

  function setFilter(status, type) {
    state.status = status;
    state.type = type;
    $("filter-status").value = status;
    $("filter-type").value = type;
    STATUSES.forEach(function (s) { $("count-" + s).classList.toggle("active", s === status); });
    state.cursor = null;
    loadList(false).catch(showError);
  }

  function applyToList(job) {
    job = freshest(job);
    var known = state.jobs.get(job.id);
    if (known && !newer(job, known)) return;
    var row = rowFor(job.id);
    if (row) {
      if (matches(job)) {
        state.jobs.set(job.id, job);
        fillRow(row, job);
      } else {
        state.jobs.delete(job.id);
        row.remove();
      }
    } else if (matches(job)) {
      // A job the list does not show yet: new (or newly matching) jobs go on top,
      // the list being newest first; older ones turn up with "load more".
      var body = document.querySelector("#jobs tbody");
      var first = body.firstElementChild;
      var firstJob = first && state.jobs.get(first.dataset.id);
      if (!firstJob || job.createdAt >= firstJob.createdAt) {
        state.jobs.set(job.id, job);
        body.insertBefore(makeRow(job), first);
      }
    }
    updateEmpty();
  }

  // -- detail ------------------------------------------------------------------

  var detailJob = null;

  function renderDetail(job) {
    job = freshest(job);
    if (detailJob && detailJob.id === job.id && !newer(job, detailJob)) return;
    detailJob = job;
    $("detail").hidden = false;
    $("detail").dataset.status = job.status;
    $("detail-title").textContent = job.type;
    var status = $("detail-status");
    status.textContent = job.status;
    status.className = "status status-" + job.status;
    $("detail-progress").value = job.progress;
    $("detail-percent").textContent = job.progress + "%";
    $("detail-id").textContent = job.id;
    $("detail-attempts").textContent = job.attempts + " / " + job.maxAttempts;
    $("detail-created").textContent = when(job.createdAt);
    $("detail-started").textContent = when(job.startedAt);
    $("detail-completed").textContent = when(job.completedAt);
    $("detail-runat").textContent = when(job.runAt);
    $("detail-owner").textContent = job.owner || "—";
    $("detail-error").textContent = job.error || "—";
    $("detail-args").textContent = pretty(job.args);
    $("detail-result").textContent = pretty(job.result);
    $("retry").hidden = !RETRYABLE[job.status];
    $("cancel").hidden = !CANCELLABLE[job.status];
  }

  function openDetail(id) {
    state.detail = id;
    detailJob = null;
    document.querySelectorAll("#jobs tbody tr.selected").forEach(function (r) { r.classList.remove("selected"); });
    var row = rowFor(id);
    if (row) row.classList.add("selected");
    if (window.location.hash !== "#job=" + id) history.replaceState(null, "", "#job=" + encodeURIComponent(id));
    return api("/jobs/" + encodeURIComponent(id)).then(renderDetail).catch(function (error) {
      closeDetail();
      showError(error);
    });
  }

  function closeDetail() {
    state.detail = null;
    detailJob = null;
    $("detail").hidden = true;
    document.querySelectorAll("#jobs tbody tr.selected").forEach(function (r) { r.classList.remove("selected"); });
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  function act(action) {
    if (!state.detail) return;
    var id = state.detail;
    var button = $(action);
    button.disabled = true;
    api("/jobs/" + encodeURIComponent(id) + "/" + action, { method: "POST" })
      .then(function (job) {
        applyJob(job);
        showError(null);
      })
      .catch(showError)
      .then(function () { button.disabled = false; });
  }

  // -- live updates --------------------------------------------------------------

  function applyJob(job) {
    applyToList(job);
    if (state.detail === job.id) renderDetail(job);
    refreshSummarySoon();
  }

  function setLive(text, className) {
    var live = $("live");
    live.textContent = text;
    live.className = "live " + className;
  }

  function refreshAll() {
    var work = [loadSummary(), loadList(false)];
    if (state.detail) {
      work.push(api("/jobs/" + encodeURIComponent(state.detail)).then(renderDetail));
    }
    return Promise.all(work).catch(showError);
  }

  function startPolling() {
    if (state.pollTimer) return;
    setLive("polling", "off");
    state.pollTimer = setInterval(refreshAll, POLL_MS);
    setTimeout(function () {
      clearInterval(state.pollTimer);
      state.pollTimer = null;
      connect();
    }, SSE_RETRY_MS);
  }

  function connect() {
    if (typeof EventSource === "undefined") {
      startPolling();
      return;
    }
    var source = new EventSource(base + "/api/events");
    state.source = source;
    source.addEventListener("ready", function () {
      setLive("live", "on");
      // Whatever changed before the stream was live is fetched once it is.
      refreshAll();
    });
    source.addEventListener("job", function (event) {
      try {
        applyJob(JSON.parse(event.data));
      } catch (error) {
        showError(error);
      }
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (no pubsub for live updates, or logged out): poll instead.
        state.source = null;
        startPolling();
      } else {
        setLive("reconnecting…", "off");
      }
    });
  }

  // -- wiring ---------------------------------------------------------------------

  buildCounts();
  $("filter-status").addEventListener("change", function (e) { setFilter(e.target.value, state.type); });
  $("filter-type").addEventListener("change", function (e) { setFilter(state.status, e.target.value); });
  $("filters").addEventListener("submit", function (e) { e.preventDefault(); });
  $("more").addEventListener("click", function () { loadList(true).catch(showError); });
  $("detail-close").addEventListener("click", closeDetail);
  $("retry").addEventListener("click", function () { act("retry"); });
  $("cancel").addEventListener("click", function () { act("cancel"); });
  $("logout").addEventListener("click", function () {
    fetch(base + "/logout", { method: "POST", headers: { "X-Plugboard-CSRF": csrf }, credentials: "same-origin" })
      .then(function () { window.location.reload(); });
  });

  connect();
  refreshAll().then(function () {
    var match = /^#job=(.+)$/.exec(window.location.hash);
    if (match) openDetail(decodeURIComponent(match[1]));
  });
})();
