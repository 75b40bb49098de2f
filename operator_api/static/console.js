// 居家养老应急调度台: the dispatcher console (operator_api/console.py serves it).
// Plain JavaScript, no library, nothing loaded from outside. Every text from the server
// goes into the page as text (textContent), never as HTML.
"use strict";

(function () {
  const TZ = "Asia/Shanghai";
  const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };
  const OPEN = new Set(["pending", "open", "acknowledged"]);
  const EVENT_LABELS = {
    opened: "告警产生", confirmed: "告警确认", cancelled: "已取消", repeated: "再次触发",
    notified: "已通知", escalated: "升级通知", reminder: "提醒", acknowledged: "已接单",
    arrived: "已到达", resolved: "已办结", false_alarm: "标记误报", note: "备注",
    handled: "已告知他人", closed: "已关闭", call: "电话记录", reopened: "重新打开",
    notifications_cancelled: "撤回待发通知", handled_enqueued: "通知他人已接单", dispatch_enqueued: "派单通知", closed_enqueued: "通知他人已办结",
  };
  const CHANNEL_LABELS = { sms: "短信", wecom: "企业微信", downlink: "设备下发", voice: "语音电话" };
  const RECEIPT_LABELS = {
    delivered: "对方已收到", failed: "运营商报告失败", answered: "已接听", unanswered: "未接听",
    key1: "按1：我来处理", key2: "按2：转下一位",
  };
  const DELIVERY_LABELS = {
    pending: "待发送", sent: "已发送", delivered: "已送达", failed: "发送失败", cancelled: "已取消",
  };
  const RECIPIENT_LABELS = {
    grid_worker: "网格员", family: "家属", station: "服务站", duty_officer: "值班员", device: "设备",
  };
  const DEVICE_LABELS = {
    wristband: "手环", pir: "人体感应", door: "门磁", water_meter: "水表", radar: "雷达",
    smoke: "烟感", gas: "燃气报警器", leak: "水浸",
  };
  const ROLE_LABELS = { operator: "调度员", grid_worker: "网格员", admin: "管理员" };

  const state = {
    me: null,
    queue: new Map(), // alert id -> queue row
    seen: new Set(), // alert ids already announced with a sound
    selected: null, // {type: "alert"|"elder", id}
    offsetMs: 0, // server clock - browser clock
    live: false,
    sound: true,
    sounds: 0,
    firstLoad: true,
    firstSeen: {}, // alert id -> when this page first showed it (ms since epoch)
    people: {}, // "grid_worker:GW01" -> name, from the open card's dispatch list
  };
  window.cwConsole = state; // for the browser tests and for curious dispatchers

  // --- helpers ---------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  function now() { return Date.now() + state.offsetMs; }
  function syncClock(serverIso) {
    if (serverIso) state.offsetMs = Date.parse(serverIso) - Date.now();
  }

  const timeFmt = new Intl.DateTimeFormat("zh-CN", {
    timeZone: TZ, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  const dateFmt = new Intl.DateTimeFormat("zh-CN", { timeZone: TZ, month: "numeric", day: "numeric" });
  function clock(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    const today = dateFmt.format(new Date(now())) === dateFmt.format(d);
    return (today ? "" : dateFmt.format(d) + " ") + timeFmt.format(d);
  }
  function ago(iso) {
    if (!iso) return "暂无记录";
    const s = Math.max(0, (now() - Date.parse(iso)) / 1000);
    if (s < 60) return Math.floor(s) + "秒前";
    if (s < 3600) return Math.floor(s / 60) + "分钟前";
    if (s < 86400) return Math.floor(s / 3600) + "小时" + Math.floor((s % 3600) / 60) + "分钟前";
    return Math.floor(s / 86400) + "天前";
  }
  function countdown(iso) {
    const s = Math.round((Date.parse(iso) - now()) / 1000);
    if (s <= 0) return "即将升级";
    const m = Math.floor(s / 60);
    return "距下一级升级 " + String(m).padStart(2, "0") + ":" + String(s % 60).padStart(2, "0");
  }
  function actorLabel(actor) {
    if (!actor) return "";
    if (actor === "rules") return "系统检测";
    if (actor === "notifier") return "通知服务";
    const [role, who] = actor.split(":", 2);
    const known = state.people[actor];
    if (known) return (RECIPIENT_LABELS[role] || role) + " " + known;
    if (ROLE_LABELS[role]) return ROLE_LABELS[role] + " " + (who || "");
    return RECIPIENT_LABELS[role] ? RECIPIENT_LABELS[role] + " " + (who || "") : actor;
  }
  function choiceText(c) {
    if (c.kind === "station") {
      return c.role + " " + c.name + "（" + c.km + " 公里，" + (c.on_duty ? "在岗" : "非值班时间") + "）";
    }
    if (c.kind === "family") return "家属 " + c.name + "（" + c.role + "）";
    return (RECIPIENT_LABELS[c.kind] || c.kind) + " " + c.name;
  }
  function profileText(name, livesAlone) {
    const parts = [name || "未设置照护类型"];
    if (livesAlone && !(name || "").includes("独居")) parts.push("独居");
    return parts.join("，");
  }
  function stoppedText(reason) {
    const m = /^(\w+) by (.+)$/.exec(reason || "");
    if (!m) return reason ? "升级已停止（" + reason + "）" : "升级已结束";
    return "升级已停止：" + actorLabel(m[2]) + " " + (EVENT_LABELS[m[1]] || m[1]);
  }

  function telLink(phone, label) {
    if (!phone) return el("span", { class: "muted" }, "无电话");
    if (phone.includes("*")) return el("span", { class: "masked", title: "无权查看完整号码" }, phone);
    return el("a", { class: "tel", href: "tel:" + phone.replace(/[^0-9+]/g, "") }, label || phone);
  }

  async function api(path, options) {
    const res = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    if (res.status === 401) { location.reload(); throw new Error("未登录"); }
    const text = await res.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = { detail: text }; }
    if (!res.ok) {
      const detail = body && body.detail;
      const err = new Error(typeof detail === "string" ? detail : res.status + " " + res.statusText);
      err.status = res.status;
      throw err;
    }
    return body;
  }
  function post(path, body) {
    return api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Carewatch-Console": "1" },
      body: JSON.stringify(body || {}),
    });
  }

  // --- sound -----------------------------------------------------------------------

  let audio = null;
  function beep() {
    if (!state.sound) return;
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === "suspended") audio.resume();
      const t0 = audio.currentTime;
      [0, 0.25, 0.5].forEach((dt, i) => {
        const osc = audio.createOscillator();
        const gain = audio.createGain();
        osc.frequency.value = i === 1 ? 660 : 880;
        gain.gain.setValueAtTime(0.2, t0 + dt);
        gain.gain.exponentialRampToValueAtTime(0.001, t0 + dt + 0.2);
        osc.connect(gain).connect(audio.destination);
        osc.start(t0 + dt);
        osc.stop(t0 + dt + 0.21);
      });
      state.sounds += 1;
      document.body.dataset.sounds = String(state.sounds);
    } catch (e) {
      console.warn("sound failed", e);
    }
  }

  // --- layout ----------------------------------------------------------------------

  const liveBadge = el("span", { id: "live", class: "live off" }, "连接中…");
  const soundButton = el("button", { type: "button", id: "sound", class: "ghost" }, "提示音：开");
  soundButton.addEventListener("click", () => {
    state.sound = !state.sound;
    soundButton.textContent = state.sound ? "提示音：开" : "提示音：关";
    if (state.sound) beep();
  });
  const queueCount = el("span", { class: "count", id: "queue-count" }, "0");
  const queueList = el("ul", { id: "queue", class: "queue" });
  const searchInput = el("input", {
    id: "search-q", type: "search", placeholder: "姓名、地址或网格", autocomplete: "off",
  });
  const gridSelect = el("select", { id: "search-grid" }, el("option", { value: "" }, "全部网格"));
  const profileSelect = el("select", { id: "search-profile" }, el("option", { value: "" }, "全部照护类型"));
  const deviceSelect = el("select", { id: "search-device" }, el("option", { value: "" }, "全部设备状态"));
  const searchResults = el("ul", { id: "search-results", class: "elders" });
  const searchNote = el("p", { class: "muted", id: "search-note" });
  const detail = el("section", { id: "detail", class: "detail" },
    el("p", { class: "placeholder" }, "请在左侧选择一条告警或一位老人。"));
  const tabQueue = el("button", { type: "button", class: "tab active", id: "tab-queue" },
    "告警队列 ", queueCount);
  const tabSearch = el("button", { type: "button", class: "tab", id: "tab-search" }, "老人查询");
  const paneQueue = el("div", { class: "pane", id: "pane-queue" }, queueList);
  const paneSearch = el("div", { class: "pane hidden", id: "pane-search" },
    el("form", { id: "search-form", class: "search" }, searchInput, gridSelect, profileSelect, deviceSelect,
      el("button", { type: "submit" }, "查询")),
    searchNote, searchResults);
  function showTab(which) {
    tabQueue.classList.toggle("active", which === "queue");
    tabSearch.classList.toggle("active", which === "search");
    paneQueue.classList.toggle("hidden", which !== "queue");
    paneSearch.classList.toggle("hidden", which !== "search");
  }
  tabQueue.addEventListener("click", () => showTab("queue"));
  tabSearch.addEventListener("click", () => {
    showTab("search");
    searchInput.focus();
    if (!searchResults.children.length) search().catch(console.error);
  });
  paneSearch.querySelector("form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  gridSelect.addEventListener("change", search);
  profileSelect.addEventListener("change", search);
  deviceSelect.addEventListener("change", search);

  function renderShell() {
    const logout = el("form", { method: "post", action: "/console/logout", class: "logout" },
      el("button", { type: "submit", class: "ghost" }, "退出"));
    const header = el("header", { class: "top" },
      el("h1", {}, "居家养老应急调度台"),
      el("span", { class: "who", id: "who" }, state.me.title),
      el("span", { class: "spacer" }),
      liveBadge, soundButton,
      el("button", { type: "button", class: "ghost", id: "btn-reports",
        onclick: () => showReports("week").catch(console.error) }, "报表"),
      el("a", { href: "/console/docs", class: "ghost link", target: "_blank", rel: "noopener" }, "接口文档"),
      logout);
    const side = el("aside", { class: "side" }, el("nav", { class: "tabs" }, tabQueue, tabSearch),
      paneQueue, paneSearch);
    const app = document.getElementById("app");
    app.className = "app";
    app.replaceChildren(header, el("div", { class: "main" }, side, detail));
    for (const g of state.me.grids) {
      gridSelect.append(el("option", { value: g.id }, g.name + "（" + g.street + "）"));
    }
    for (const p of state.me.care_profiles) profileSelect.append(el("option", { value: p.id }, p.name));
    for (const [code, label] of Object.entries(state.me.device_states)) {
      deviceSelect.append(el("option", { value: code }, label));
    }
  }

  function setLive(on) {
    state.live = on;
    liveBadge.className = "live " + (on ? "on" : "off");
    liveBadge.textContent = on ? "● 实时" : "○ 重新连接中…";
    document.body.dataset.live = on ? "1" : "0";
  }

  // --- queue -----------------------------------------------------------------------

  function sortedQueue() {
    return [...state.queue.values()].sort((a, b) =>
      (SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity]) ||
      (Date.parse(a.opened_at) - Date.parse(b.opened_at)) || (a.id < b.id ? -1 : 1));
  }

  function queueItem(a) {
    const selected = state.selected && state.selected.type === "alert" && state.selected.id === a.id;
    const li = el("li", {
      class: "alert sev-" + a.severity + " st-" + a.status + (selected ? " selected" : ""),
      "data-alert-id": a.id, tabindex: "0",
    },
      el("div", { class: "row1" },
        el("span", { class: "kind" }, a.kind_label),
        el("span", { class: "badge sev-" + a.severity }, a.severity_label),
        el("span", { class: "badge st-" + a.status }, a.status_label),
        el("span", { class: "age", "data-since": a.opened_at }, ago(a.opened_at))),
      el("div", { class: "row2" },
        el("span", { class: "elder-name" }, a.elder_name),
        el("span", { class: "profile" }, profileText(a.care_profile_name, a.lives_alone))),
      el("div", { class: "row3 muted" }, (a.address || "地址未登记") + " · " + (a.grid_name || a.grid_id)),
      a.next_step_at && a.status !== "acknowledged" ?
        el("div", { class: "countdown", "data-deadline": a.next_step_at }, countdown(a.next_step_at)) :
        (a.acknowledged_by ? el("div", { class: "muted" }, "接单：" + actorLabel(a.acknowledged_by)) : null));
    li.addEventListener("click", () => selectAlert(a.id));
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") selectAlert(a.id); });
    return li;
  }

  function renderQueue() {
    const items = sortedQueue();
    queueCount.textContent = String(items.length);
    document.title = (items.length ? "(" + items.length + ") " : "") + "应急调度台";
    queueList.replaceChildren(...(items.length ? items.map(queueItem) :
      [el("li", { class: "empty" }, "暂无待处理告警")]));
  }

  function upsert(item) {
    const isNew = !state.seen.has(item.id);
    state.seen.add(item.id);
    if (isNew) state.firstSeen[item.id] = Date.now();
    if (OPEN.has(item.status)) state.queue.set(item.id, item);
    else state.queue.delete(item.id);
    return isNew && OPEN.has(item.status);
  }

  async function loadQueue() {
    const data = await api("/console/api/queue");
    syncClock(data.now);
    let fresh = false;
    const ids = new Set();
    for (const item of data.items) { ids.add(item.id); fresh = upsert(item) || fresh; }
    for (const id of [...state.queue.keys()]) if (!ids.has(id)) state.queue.delete(id);
    renderQueue();
    if (fresh && !state.firstLoad) beep();
    state.firstLoad = false;
  }

  // --- live stream -----------------------------------------------------------------

  function connect() {
    const source = new EventSource("/console/api/stream");
    source.addEventListener("ready", () => { setLive(true); loadQueue().catch(console.error); });
    source.addEventListener("alert", (e) => {
      const item = JSON.parse(e.data);
      const fresh = upsert(item);
      renderQueue();
      if (fresh) beep();
      if (state.selected && state.selected.type === "alert" && state.selected.id === item.id) {
        loadAlert(item.id).catch(console.error);
      }
    });
    source.addEventListener("resync", () => loadQueue().catch(console.error));
    source.addEventListener("logout", () => { source.close(); location.reload(); });
    source.onerror = () => setLive(false); // EventSource reconnects by itself
  }

  // --- alert card ------------------------------------------------------------------

  function section(title, ...body) {
    return el("section", { class: "card" }, el("h3", {}, title), ...body);
  }

  function kv(pairs) {
    return el("dl", { class: "kv" }, ...pairs.filter(Boolean).flatMap(([k, v]) =>
      [el("dt", {}, k), el("dd", {}, v)]));
  }

  function eventLabel(e) {
    const mode = (e.details || {}).mode;
    if (e.action === "acknowledged" && mode === "dispatch") return "派单";
    if (e.action === "acknowledged" && mode === "take_over") return "接手";
    return EVENT_LABELS[e.action] || e.action;
  }

  function eventText(e) {
    const d = e.details || {};
    const parts = [];
    if (e.action === "call") {
      parts.push("致电" + (d.callee ? " " + d.callee : "") + "：" + (d.outcome_label || d.outcome));
    } else if (d.outcome_label) parts.push("结果：" + d.outcome_label);
    if (d.mode === "dispatch" && d.dispatched) parts.push("派单给 " + actorLabel(d.dispatched));
    if ((d.mode === "dispatch" || d.mode === "take_over") && d.stand_down) parts.push("已请其他人停止前往");
    if (e.action === "dispatch_enqueued" && d.recipient) parts.push("发送给 " + actorLabel(d.recipient));
    if (d.false_alarm_reason_label) parts.push("误报原因：" + d.false_alarm_reason_label);
    if (d.note) parts.push(d.note);
    if (d.step !== undefined && (e.action === "notified" || e.action === "escalated")) parts.push("第" + (Number(d.step) + 1) + "级");
    if (d.from && d.to && d.from !== d.to) parts.push(d.from + " → " + d.to);
    return parts.join(" · ");
  }

  function actions(a, dial, reopenUntil, choices) {
    const box = el("div", { class: "actions", id: "actions" });
    const message = el("p", { class: "action-msg", id: "action-msg", role: "status" });
    async function run(path, body, done) {
      message.textContent = "提交中…";
      message.className = "action-msg";
      try {
        await post("/console/api/alerts/" + a.id + "/" + path, body);
        message.textContent = done;
        await loadAlert(a.id);
      } catch (err) {
        message.textContent = "操作失败：" + (err.status === 409 ? "告警状态已变化，请刷新查看" : err.message);
        message.className = "action-msg error";
      }
    }
    if (a.status === "open" || a.status === "acknowledged") {
      // 接手: the operator has it; the others stay away only when asked to
      const standDown = el("input", { type: "checkbox", id: "take-over-stand-down" });
      const takeNote = el("input", { id: "take-over-note", type: "text", maxlength: "500", placeholder: "告知其他人的留言（可选）" });
      box.append(el("form", {
        id: "take-over-form", class: "resolve",
        onsubmit: (e) => {
          e.preventDefault();
          run("take-over", { note: takeNote.value, stand_down: standDown.checked },
            standDown.checked ? "已接手，已请其他人停止前往" : "已接手，升级通知已停止");
        },
      }, el("span", { class: "label" }, "接手："),
        el("label", { class: "outcome" }, standDown, "请其他人停止前往"), takeNote,
        el("button", { type: "submit", id: "btn-take-over" }, "接手")));
    }
    if (a.status === "open" && choices.length) {
      // 派单: send a named person, who gets the alert with their own link
      const person = el("select", { id: "dispatch-person", title: "派单对象" },
        choices.map((c) => el("option", { value: c.kind + ":" + c.id }, choiceText(c))));
      const noteTo = el("select", { id: "dispatch-note-to", title: "留言发给" },
        el("option", { value: "dispatched" }, "留言只发给被派人员"),
        el("option", { value: "everyone" }, "留言发给所有已通知的人"));
      const dispatchStandDown = el("input", { type: "checkbox", id: "dispatch-stand-down" });
      const dispatchNote = el("input", { id: "dispatch-note", type: "text", maxlength: "500", placeholder: "给被派人员的留言（可选）" });
      box.append(el("form", {
        id: "dispatch-form", class: "resolve",
        onsubmit: (e) => {
          e.preventDefault();
          const [kind, ...rest] = person.value.split(":");
          const chosen = person.options[person.selectedIndex].textContent;
          run("dispatch", {
            kind, id: rest.join(":"), note: dispatchNote.value, note_to: noteTo.value,
            stand_down: dispatchStandDown.checked,
          }, "已派单：" + chosen);
        },
      }, el("span", { class: "label" }, "派单："), person, dispatchNote, noteTo,
        el("label", { class: "outcome" }, dispatchStandDown, "请其他人停止前往"),
        el("button", { type: "submit", id: "btn-dispatch", class: "primary" }, "派单")));
    }
    if (OPEN.has(a.status)) {
      const outcomes = Object.entries(state.me.outcomes).map(([code, label], i) =>
        el("label", { class: "outcome" },
          el("input", { type: "radio", name: "outcome", value: code, checked: i === 0 ? true : null }),
          label));
      const resolveNote = el("input", { id: "resolve-note", type: "text", maxlength: "500", placeholder: "办结说明（可选）" });
      const reason = el("select", { id: "false-alarm-reason", title: "误报原因" },
        el("option", { value: "" }, "误报原因（误报时必选）"),
        Object.entries(state.me.false_alarm_reasons).map(([code, label]) => el("option", { value: code }, label)));
      box.append(el("form", {
        id: "resolve-form", class: "resolve",
        onsubmit: (e) => {
          e.preventDefault();
          const chosen = e.target.querySelector("input[name=outcome]:checked");
          if (chosen.value === "false_alarm" && !reason.value) {
            message.textContent = "标记误报须选择误报原因";
            message.className = "action-msg error";
            reason.focus();
            return;
          }
          if (reason.value === "other" && chosen.value === "false_alarm" && !resolveNote.value.trim()) {
            message.textContent = "误报原因为“其他”时请填写说明";
            message.className = "action-msg error";
            resolveNote.focus();
            return;
          }
          const body = { outcome: chosen.value, note: resolveNote.value };
          if (chosen.value === "false_alarm") body.reason = reason.value;
          run("resolve", body, "已办结");
        },
      }, el("span", { class: "label" }, "办结结果："), ...outcomes, reason, resolveNote,
        el("button", { type: "submit", id: "btn-resolve", class: "secondary" }, "办结")));
    }
    if (!OPEN.has(a.status) && reopenUntil && Date.parse(reopenUntil) > now()) {
      const reopenNote = el("input", { id: "reopen-note", type: "text", maxlength: "500", placeholder: "重新打开的原因（必填）", required: true });
      box.append(el("form", {
        id: "reopen-form", class: "resolve",
        onsubmit: (e) => {
          e.preventDefault();
          if (!reopenNote.value.trim()) { reopenNote.focus(); return; }
          run("reopen", { note: reopenNote.value }, "已重新打开，告警回到处理中");
        },
      }, el("span", { class: "label" }, "已关闭的告警可在 " + clock(reopenUntil) + " 前重新打开："), reopenNote,
        el("button", { type: "submit", id: "btn-reopen", class: "secondary" }, "重新打开")));
    }
    const callees = [["老人本人", "老人本人"]].concat(
      dial.contacts.map((c) => [c.name + "（" + c.relation + "）", "家属 " + c.name + "（" + c.relation + "）"]),
      dial.grid_workers.map((w) => ["网格员 " + w.name, "网格员 " + w.name]),
      [["其他", "其他"]]);
    const callee = el("select", { id: "call-callee", title: "致电对象" },
      callees.map(([value, label]) => el("option", { value }, label)));
    const callOutcomes = Object.entries(state.me.call_outcomes).map(([code, label], i) =>
      el("label", { class: "outcome" },
        el("input", { type: "radio", name: "call-outcome", value: code, checked: i === 0 ? true : null }),
        label));
    const callNote = el("input", { id: "call-note", type: "text", maxlength: "500", placeholder: "通话内容（可选）" });
    box.append(el("form", {
      id: "call-form", class: "resolve",
      onsubmit: (e) => {
        e.preventDefault();
        const chosen = e.target.querySelector("input[name=call-outcome]:checked");
        run("call", { outcome: chosen.value, callee: callee.value, note: callNote.value },
          "通话已记录").then(() => {
          const input = document.getElementById("call-note");
          if (input) input.value = "";
        });
      },
    }, el("span", { class: "label" }, "电话记录："), callee, ...callOutcomes, callNote,
      el("button", { type: "submit", id: "btn-call" }, "记录通话")));
    const noteInput = el("textarea", { id: "note-text", rows: "2", maxlength: "500", placeholder: "记录通话情况、现场情况等" });
    box.append(el("form", {
      id: "note-form", class: "note",
      onsubmit: (e) => {
        e.preventDefault();
        if (!noteInput.value.trim()) return;
        run("note", { note: noteInput.value }, "备注已添加").then(() => {
          const input = document.getElementById("note-text");
          if (input) input.value = "";
        });
      },
    }, noteInput, el("button", { type: "submit", id: "btn-note" }, "添加备注")));
    box.append(message);
    return box;
  }

  function renderAlert(card) {
    for (const c of card.dispatch || []) state.people[c.kind + ":" + c.id] = c.name;
    const a = card.alert;
    const e = card.elder;
    const dial = card.dial;
    const esc = a.escalation;
    const head = el("div", { class: "detail-head sev-" + a.severity },
      el("h2", {}, a.kind_label + " · " + e.name),
      el("span", { class: "badge sev-" + a.severity }, card.severity_label),
      el("span", { class: "badge st-" + a.status, id: "alert-status" }, a.status_label),
      el("span", { class: "muted" }, "发生于 " + clock(a.opened_at) + "（" + ago(a.opened_at) + "）"));
    const escalation = esc ? el("div", { class: "escalation" },
      esc.next_step_at ? el("strong", { class: "countdown", "data-deadline": esc.next_step_at }, countdown(esc.next_step_at)) :
        el("span", {}, stoppedText(esc.stopped_reason)),
      el("span", { class: "muted" }, " 已执行至第" + (esc.step + 1) + "级（策略 " + esc.policy + "）")) : null;
    const person = card.person || {};
    const elderInfo = section("老人信息", kv([
      ["姓名", e.name + (person.gender ? "（" + person.gender + "）" : "")],
      ["电话", telLink(dial.elder)],
      ["住址", e.address || "未登记"],
      ["辖区", [e.district, e.street, person.community].filter(Boolean).join(" ") + " · " + (card.grid ? card.grid.name : e.grid_id)],
      ["照护类型", profileText(e.care_profile_name, e.lives_alone)],
      ["最后活动", ago(e.last_sign_of_life)],
    ]));
    const family = section("家属及紧急联系人",
      dial.contacts.length ? el("ul", { class: "contacts" }, dial.contacts.map((c) =>
        el("li", {}, el("span", { class: "who" }, c.priority + ". " + c.name + "（" + c.relation + "）"), telLink(c.phone)))) :
        el("p", { class: "muted" }, "未登记联系人"),
      dial.grid_workers.length ? el("ul", { class: "contacts" }, dial.grid_workers.map((w) =>
        el("li", {}, el("span", { class: "who" }, "网格员 " + w.name), telLink(w.phone)))) : null,
      dial.full_numbers ? null : el("p", { class: "muted" }, "当前身份只能查看部分号码。"));
    const needs = card.care_needs || {};
    const keyHolder = dial.key_holder;
    const careNeeds = section("医疗与照护需求",
      card.care_needs ? el("div", { id: "care-needs" }, kv([
        needs.allergies ? ["过敏史", el("strong", { class: "warn" }, needs.allergies)] : null,
        needs.medications ? ["用药", needs.medications] : null,
        needs.conditions ? ["慢性病/病史", needs.conditions] : null,
        needs.mobility ? ["行动能力", needs.mobility] : null,
        keyHolder ? ["钥匙保管人", el("span", {}, el("span", { class: "who" }, keyHolder.name + " "), telLink(keyHolder.phone))] : null,
        needs.notes ? ["备注", needs.notes] : null,
      ])) : null,
      card.care_needs_missing.length ? el("p", { class: "muted", id: "care-needs-missing" }, "台账中尚未登记：" +
        card.care_needs_missing.join("、") + "。请向家属或网格员核实后再入户。") : null);
    const mapBox = el("div", { class: "map", id: "map" });
    const m = card.map;
    const mapCard = section("位置", mapBox,
      el("p", { class: "muted coords", id: "map-coords" }, "坐标（WGS-84）：" + m.wgs84.lat.toFixed(5) + ", " + m.wgs84.lon.toFixed(5) +
        (m.tile_url ? (m.crs === "gcj02" ? " · 底图为 GCJ-02，已换算" : "") : " · 未配置底图，仅显示位置点")));
    const devices = section("设备",
      e.devices.length ? el("table", { class: "devices" },
        el("tr", {}, el("th", {}, "设备"), el("th", {}, "编号"), el("th", {}, "电量"), el("th", {}, "最后在线"), el("th", {}, "状态")),
        e.devices.map((d) => el("tr", {},
          el("td", {}, DEVICE_LABELS[d.kind] || d.kind),
          el("td", {}, d.id),
          el("td", { class: d.battery !== null && d.battery < 20 ? "warn" : "" }, d.battery === null ? "—" : d.battery + "%"),
          el("td", {}, d.last_seen ? clock(d.last_seen) + "（" + ago(d.last_seen) + "）" : "从未"),
          el("td", { class: d.online ? "ok" : "warn" }, d.online ? "在线" : "离线")))) :
        el("p", { class: "muted" }, "无设备"));
    const notifications = section("通知记录",
      a.notifications.length ? el("table", { class: "notifications", id: "notifications" },
        el("tr", {}, el("th", {}, "时间"), el("th", {}, "级"), el("th", {}, "对象"), el("th", {}, "渠道"), el("th", {}, "状态"), el("th", {}, "回执")),
        a.notifications.map((n) => el("tr", { class: "ns-" + n.status },
          el("td", {}, clock(n.created_at)),
          el("td", {}, String(n.step + 1)),
          el("td", {}, (RECIPIENT_LABELS[n.recipient_kind] || n.recipient_kind) + " " + n.recipient_name),
          el("td", {}, CHANNEL_LABELS[n.channel] || n.channel),
          el("td", { class: "delivery" }, (DELIVERY_LABELS[n.status] || n.status) +
            (n.attempts > 1 ? "（" + n.attempts + "次）" : "") +
            (n.delivered_at ? " " + clock(n.delivered_at) : n.sent_at ? " " + clock(n.sent_at) : "")),
          el("td", { class: "receipt" }, n.receipt ? (RECEIPT_LABELS[n.receipt] || n.receipt) +
            (n.receipt_at ? " " + clock(n.receipt_at) : "") +
            (n.calls_unanswered ? "（未接 " + n.calls_unanswered + " 次）" : "") :
            (n.status === "sent" ? "等待回执" : "—"))))) :
        el("p", { class: "muted" }, "尚无通知"));
    const timeline = section("处理时间线",
      el("ol", { class: "timeline", id: "timeline" }, a.events.map((ev) =>
        el("li", { "data-action": ev.action },
          el("span", { class: "t" }, clock(ev.at)),
          el("span", { class: "what" }, eventLabel(ev)),
          el("span", { class: "by muted" }, actorLabel(ev.actor)),
          el("span", { class: "text" }, eventText(ev))))));
    // a live update must not lose what the dispatcher is typing or has chosen
    const kept = {};
    if (detail.dataset.alertId === a.id) {
      for (const id of ["note-text", "resolve-note", "call-note", "reopen-note", "call-callee", "false-alarm-reason",
        "take-over-note", "dispatch-note", "dispatch-person", "dispatch-note-to"]) {
        const input = document.getElementById(id);
        if (input) kept[id] = input.value;
      }
      const chosen = detail.querySelector("input[name=outcome]:checked");
      if (chosen) kept.outcome = chosen.value;
      const called = detail.querySelector("input[name=call-outcome]:checked");
      if (called) kept.callOutcome = called.value;
      const msg = document.getElementById("action-msg");
      if (msg && msg.textContent) kept.msg = [msg.textContent, msg.className];
      if (document.activeElement && document.activeElement.id) kept.focus = document.activeElement.id;
    }
    detail.replaceChildren(...[head, escalation, actions(a, dial, card.reopen_until, card.dispatch || []),
      el("div", { class: "grid2" }, elderInfo, family), el("div", { class: "grid2" }, careNeeds, mapCard),
      devices, notifications, timeline].filter(Boolean));
    drawMap(mapBox, card.map);
    for (const id of ["note-text", "resolve-note", "call-note", "reopen-note", "take-over-note", "dispatch-note"]) {
      const input = document.getElementById(id);
      if (input && kept[id]) input.value = kept[id];
    }
    for (const id of ["call-callee", "false-alarm-reason", "dispatch-person", "dispatch-note-to"]) {
      const select = document.getElementById(id);
      if (select && kept[id]) select.value = kept[id];
    }
    if (kept.outcome) {
      const radio = detail.querySelector("input[name=outcome][value=" + kept.outcome + "]");
      if (radio) radio.checked = true;
    }
    if (kept.msg) {
      const msg = document.getElementById("action-msg");
      [msg.textContent, msg.className] = kept.msg;
    }
    if (kept.callOutcome) {
      const radio = detail.querySelector("input[name=call-outcome][value=" + kept.callOutcome + "]");
      if (radio) radio.checked = true;
    }
    if (kept.focus && document.getElementById(kept.focus)) document.getElementById(kept.focus).focus();
    detail.dataset.alertId = a.id;
    detail.dataset.status = a.status;
  }

  // --- map (Leaflet, served by the console; tiles only from the configured server) ----

  let map = null;
  function drawMap(box, view) {
    if (map) { map.remove(); map = null; }
    if (!window.L) { box.replaceWith(el("p", { class: "muted" }, "地图组件未加载")); return; }
    map = L.map(box, { zoomControl: true, attributionControl: Boolean(view.tile_url) })
      .setView([view.lat, view.lon], 16);
    if (view.tile_url) {
      map.attributionControl.setPrefix("Leaflet");
      L.tileLayer(view.tile_url, { maxZoom: 18, attribution: view.attribution || "" }).addTo(map);
    } else {
      box.classList.add("no-tiles");
    }
    L.circleMarker([view.lat, view.lon], {
      radius: 9, color: "#b42318", weight: 3, fillColor: "#f04438", fillOpacity: 0.8,
    }).addTo(map).bindTooltip("老人住址", { permanent: !view.tile_url, direction: "top" });
    box.dataset.lat = String(view.lat);
    box.dataset.lon = String(view.lon);
  }

  async function loadAlert(id) {
    const card = await api("/console/api/alerts/" + id);
    syncClock(card.now);
    if (!state.selected || state.selected.id !== id) return; // the dispatcher moved on
    renderAlert(card);
  }

  function selectAlert(id) {
    state.selected = { type: "alert", id };
    renderQueue();
    loadAlert(id).catch((err) => detail.replaceChildren(el("p", { class: "error" }, "无法加载：" + err.message)));
  }

  // --- elders ----------------------------------------------------------------------

  async function search() {
    const params = new URLSearchParams();
    if (searchInput.value.trim()) params.set("q", searchInput.value.trim());
    if (gridSelect.value) params.set("grid", gridSelect.value);
    if (profileSelect.value) params.set("profile", profileSelect.value);
    if (deviceSelect.value) params.set("device", deviceSelect.value);
    const data = await api("/console/api/elders?" + params.toString());
    syncClock(data.now);
    searchNote.textContent = data.items.length ? "共 " + data.items.length + (data.truncated ? "+ 位，请缩小范围" : " 位") : "没有找到符合条件的老人";
    searchResults.replaceChildren(...data.items.map((e) => {
      const li = el("li", { class: "elder", "data-elder-id": e.id, tabindex: "0" },
        el("div", { class: "row1" }, el("span", { class: "elder-name" }, e.name),
          el("span", { class: "profile" }, profileText(e.care_profile_name, e.lives_alone)),
          e.open_alerts ? el("span", { class: "badge sev-critical" }, e.open_alerts + " 条告警") : null),
        el("div", { class: "row3 muted" }, (e.address || "地址未登记") + " · " + (e.grid_name || e.grid_id)),
        el("div", { class: "muted" }, "最后活动：" + ago(e.last_sign_of_life) +
          (e.devices_offline ? " · " + e.devices_offline + " 台设备离线" : "") +
          (e.lowest_battery !== null && e.lowest_battery < 20 ? " · 电量 " + e.lowest_battery + "%" : "")));
      li.addEventListener("click", () => selectElder(e.id));
      return li;
    }));
  }

  // --- 报表: the street and district report, scoped as the caller ---------------------

  function minutes(stats) {
    return stats.median_s === null ? "—" : (stats.median_s / 60).toFixed(1) + " 分";
  }
  function percent(rate) { return rate === null ? "—" : Math.round(rate * 100) + "%"; }

  async function showReports(period) {
    state.selected = { type: "reports", id: period };
    renderQueue();
    const report = await api("/console/api/reports/areas?period=" + period);
    detail.dataset.alertId = "";
    const periodSelect = el("select", { id: "report-period", title: "统计周期" },
      el("option", { value: "week" }, "本周"), el("option", { value: "month" }, "本月"));
    periodSelect.value = period;
    periodSelect.addEventListener("change", () => showReports(periodSelect.value).catch(console.error));
    const download = (fmt, label) => el("a", {
      href: "/console/api/reports/areas." + fmt + "?period=" + period, class: "download",
      id: "report-" + fmt, download: "",
    }, label);
    const head = ["区", "街道", "老人数", "应走访", "已走访", "走访率", "签到", "告警", "接单中位", "到达中位", "误报率", "离线设备"];
    detail.replaceChildren(
      el("div", { class: "detail-head" }, el("h2", {}, "辖区报表"),
        el("span", { class: "muted" }, report.start + " 至 " + report.end), periodSelect,
        download("csv", "下载 CSV"), download("xlsx", "下载 Excel")),
      section("按街道、区统计", report.rows.length ? el("div", { class: "table-wrap" }, el("table", { class: "devices", id: "report-table" },
        el("tr", {}, head.map((h) => el("th", {}, h))),
        report.rows.map((r) => el("tr", { class: r.level === "district" ? "total" : "" },
          el("td", {}, r.district), el("td", {}, r.level === "district" ? "合计" : r.street),
          el("td", {}, String(r.elders)), el("td", {}, String(r.visits_due)), el("td", {}, String(r.visits_done)),
          el("td", {}, percent(r.visit_rate)), el("td", {}, String(r.checkins)), el("td", {}, String(r.alerts)),
          el("td", {}, minutes(r.time_to_acknowledge)), el("td", {}, minutes(r.time_to_arrive)),
          el("td", {}, percent(r.false_alarm_rate)), el("td", {}, String(r.devices_offline)))))) :
          el("p", { class: "muted" }, "辖区内暂无数据")));
  }

  async function selectElder(id) {
    state.selected = { type: "elder", id };
    renderQueue();
    const data = await api("/console/api/elders/" + encodeURIComponent(id));
    const e = data.elder;
    detail.dataset.alertId = "";
    detail.replaceChildren(
      el("div", { class: "detail-head" }, el("h2", {}, e.name),
        el("span", { class: "muted" }, e.district + " " + e.street + " · " + e.grid_id)),
      section("老人信息", kv([
        ["性别", (data.person && data.person.gender) || "未登记"],
        ["社区", (data.person && data.person.community) || "未登记"],
        ["电话", telLink(e.phone)], ["住址", e.address || "未登记"],
        ["照护类型", profileText(e.care_profile_name, e.lives_alone)],
        ["最后活动", ago(e.last_sign_of_life)],
      ])),
      section("联系人", el("ul", { class: "contacts" }, e.contacts.map((c) =>
        el("li", {}, el("span", { class: "who" }, c.priority + ". " + c.name + "（" + c.relation + "）"), telLink(c.phone))))),
      section("设备", el("ul", { class: "plain" }, e.devices.map((d) =>
        el("li", {}, (DEVICE_LABELS[d.kind] || d.kind) + " " + d.id + " · 电量 " +
          (d.battery === null ? "—" : d.battery + "%") + " · " + (d.online ? "在线" : "离线") + " · 最后在线 " + ago(d.last_seen))))),
      section("近期告警", data.alerts.length ? el("ul", { class: "plain" }, data.alerts.map((a) => {
        const li = el("li", { class: "link" }, clock(a.opened_at) + " " + a.kind_label + " · " + a.status_label);
        li.addEventListener("click", () => selectAlert(a.id));
        return li;
      })) : el("p", { class: "muted" }, "无告警记录")));
  }

  // --- clock tick ------------------------------------------------------------------

  setInterval(() => {
    for (const node of document.querySelectorAll("[data-deadline]")) node.textContent = countdown(node.dataset.deadline);
    for (const node of document.querySelectorAll("[data-since]")) node.textContent = ago(node.dataset.since);
  }, 1000);

  // --- start -----------------------------------------------------------------------

  api("/console/api/me").then((me) => {
    state.me = me;
    renderShell();
    setLive(false);
    connect();
  }).catch((err) => {
    document.getElementById("app").textContent = "加载失败：" + err.message;
  });
})();
