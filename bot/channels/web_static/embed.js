/* For an NGO's own site: <script src="https://BOT/chat/embed.js" data-lang="km" data-start="guidance"></script>
   adds a chat button that opens SafeRoute in a frame (the site's origin must be in WEB_CHAT_ORIGINS). */
(function () {
  var me = document.currentScript, base = new URL(me.src).origin;
  var lang = me.getAttribute("data-lang") || "", start = me.getAttribute("data-start") || "";
  var open = document.createElement("button");
  open.textContent = "💬 SafeRoute";
  open.style.cssText = "position:fixed;right:1rem;bottom:1rem;z-index:2147483647;padding:.7rem 1rem;border:0;border-radius:2rem;background:#0b5563;color:#fff;font:16px system-ui,sans-serif";
  open.addEventListener("click", function () {
    var frame = document.createElement("iframe");
    frame.src = base + "/chat?lang=" + encodeURIComponent(lang) + "&start=" + encodeURIComponent(start);
    frame.title = "SafeRoute";
    frame.style.cssText = "position:fixed;right:1rem;bottom:1rem;width:min(26rem,94vw);height:min(40rem,85vh);border:1px solid #ccc;border-radius:1rem;z-index:2147483647;background:#fff";
    document.body.appendChild(frame);
    open.remove();
  });
  document.body.appendChild(open);
})();
