/* SafeRoute web chat. No framework, no build step, nothing from another origin.
   What the bot sends is rendered from a few allowed tags; what the person types is text. */
(function () {
  "use strict";
  var params = new URLSearchParams(location.search);
  var lang = (params.get("lang") || "").replace(/[^a-z]/g, "").slice(0, 3);
  var start = (params.get("start") || "").replace(/[^a-z_]/g, "").slice(0, 32);
  var log = document.getElementById("log"), form = document.getElementById("say"), input = document.getElementById("text");
  var ALLOWED = { B: "b", STRONG: "b", I: "i", EM: "i", U: "u", S: "s", CODE: "code", A: "a" };

  function newSession() {
    var bytes = new Uint8Array(24);
    crypto.getRandomValues(bytes);
    return btoa(String.fromCharCode.apply(null, bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  var session = localStorage.getItem("saferoute.session");
  if (!session) { session = newSession(); localStorage.setItem("saferoute.session", session); }
  var transcript = JSON.parse(sessionStorage.getItem("saferoute.transcript") || "[]");

  function save() { sessionStorage.setItem("saferoute.transcript", JSON.stringify(transcript.slice(-200))); }

  function safe(node, into) {
    node.childNodes.forEach(function (child) {
      if (child.nodeType === 3) { into.appendChild(document.createTextNode(child.textContent)); return; }
      if (child.nodeType !== 1) { return; }
      var tag = ALLOWED[child.tagName];
      if (child.tagName === "BR") { into.appendChild(document.createTextNode("\n")); return; }
      if (!tag) { safe(child, into); return; }
      var el = document.createElement(tag);
      if (tag === "a") {
        var href = child.getAttribute("href") || "";
        if (/^https:\/\//.test(href) || /^tel:/.test(href)) { el.href = href; el.rel = "noopener noreferrer"; el.target = "_blank"; }
      }
      safe(child, el);
      into.appendChild(el);
    });
  }

  function render(item) {
    if (item.kind === "delete") {
      var gone = log.querySelector('[data-ref="' + CSS.escape(item.ref) + '"]');
      if (gone) { gone.remove(); }
      return;
    }
    if (item.kind === "clear_buttons") {
      var old = log.querySelector('[data-ref="' + CSS.escape(item.ref) + '"] .choices');
      if (old) { old.remove(); }
      return;
    }
    var box = document.createElement("div");
    box.className = "msg " + (item.kind === "mine" ? "me" : "bot");
    if (item.ref) { box.setAttribute("data-ref", item.ref); }
    if (item.kind === "mine") {
      box.textContent = item.text;
    } else {
      safe(new DOMParser().parseFromString("<div>" + item.text + "</div>", "text/html").body.firstChild, box);
      var buttons = (item.buttons || []).concat(item.nav || []);
      if (buttons.length && !item.answered) {
        var choices = document.createElement("div");
        choices.className = "choices";
        buttons.forEach(function (b) {
          var el;
          if (b.url) {
            el = document.createElement("a");
            el.href = /^https:\/\//.test(b.url) ? b.url : "#";
            el.rel = "noopener noreferrer"; el.target = "_blank";
          } else {
            el = document.createElement("button");
            el.type = "button";
            el.addEventListener("click", function () { press(item, b, choices); });
          }
          el.textContent = b.label;
          choices.appendChild(el);
        });
        box.appendChild(choices);
      }
    }
    log.appendChild(box);
    log.scrollTop = log.scrollHeight;
  }

  function shown(item) {
    var ack = item.ack;
    delete item.ack;
    if (item.ref && item.kind === "message" && transcript.some(function (t) { return t.ref === item.ref; })) {
      if (ack && socket) { socket.send(JSON.stringify({ ack: item.ref })); }  // kept already: sent again after a reload
      return;
    }
    if (item.kind === "delete") {
      transcript = transcript.filter(function (t) { return t.ref !== item.ref; });
    } else if (item.kind === "clear_buttons") {
      transcript.forEach(function (t) { if (t.ref === item.ref) { t.answered = true; } });
    } else if (item.kind === "note") {
      var note = document.createElement("p");
      note.className = "note";
      note.textContent = item.text || "…";
      log.appendChild(note);
      log.scrollTop = log.scrollHeight;
      return;
    } else {
      transcript.push(item);
    }
    save();
    render(item);
    if (ack && socket && socket.readyState === 1) { socket.send(JSON.stringify({ ack: item.ref })); }
  }

  function press(item, button, choices) {
    choices.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    item.answered = true;
    transcript.push({ kind: "mine", text: button.label });
    save();
    render({ kind: "mine", text: button.label });
    send({ choice: button.data, ref: item.ref });
  }

  var socket = null, polling = false, queue = [];
  function send(data) {
    data.session = session; data.lang = lang;
    if (socket && socket.readyState === 1) { socket.send(JSON.stringify(data)); return; }
    if (polling) {
      fetch("/chat/send", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) })
        .then(function (r) { return r.json(); }).then(function (body) { if (body.error === "too_many") { shown({ kind: "note", text: body.text }); } });
      return;
    }
    queue.push(data);
  }
  function flush() { var waiting = queue; queue = []; waiting.forEach(send); }

  function poll() {
    fetch("/chat/poll", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ session: session }) })
      .then(function (r) { return r.json(); }).then(function (body) {
      (body.items || []).forEach(shown);
      poll();
    }, function () { setTimeout(poll, 3000); });
  }

  function connect() {
    var opened = false;
    try {
      socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host +
        "/chat/ws?lang=" + encodeURIComponent(lang));
    } catch (e) { socket = null; }
    if (!socket) { polling = true; poll(); flush(); return; }
    socket.onopen = function () { opened = true; socket.send(JSON.stringify({ session: session })); flush(); };
    socket.onmessage = function (e) { shown(JSON.parse(e.data)); };
    socket.onclose = function () {
      socket = null;
      if (!opened) { polling = true; poll(); flush(); } else { setTimeout(connect, 2000); }
    };
  }

  function quickExit() {
    try { if (socket) { socket.close(); } } catch (e) { /* leaving anyway */ }
    log.textContent = ""; input.value = "";
    sessionStorage.clear();
    localStorage.removeItem("saferoute.session");
    location.replace("/chat/away");
  }
  document.getElementById("exit").addEventListener("click", quickExit);
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") { quickExit(); } });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text) { return; }
    input.value = "";
    transcript.push({ kind: "mine", text: text });
    save();
    render({ kind: "mine", text: text });
    send({ text: text });
  });

  fetch("/chat/texts?lang=" + encodeURIComponent(lang)).then(function (r) { return r.json(); }).then(function (t) {
    document.documentElement.lang = t.lang || "en";
    input.placeholder = t.placeholder; input.setAttribute("aria-label", t.placeholder);
    document.getElementById("send").setAttribute("aria-label", t.send);
    var exit = document.getElementById("exit");
    exit.textContent = "🚪 " + t.quick_exit; exit.title = t.quick_exit_hint;
  });

  transcript.forEach(render);
  connect();
  if (!transcript.length) { send({ text: "/start" + (start ? " " + start : "") }); }
})();
