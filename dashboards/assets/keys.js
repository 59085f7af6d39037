// Keyboard shortcuts of the review page (Dash has no key component).
// A document keydown listener that ignores typing in inputs/textareas/dropdowns and hands
// the key to a dcc.Store with dash_clientside.set_props; a Python callback does the rest.
//   a / d / s      -> key-verdict  {v: agree|disagree|skip}
//   j k, arrows    -> key-nav      {dir: +1|-1}
//   1-9, Tab       -> key-dim      {n: 1..9} | {tab: +1|-1}
(function () {
  var VERDICTS = { a: "agree", d: "disagree", s: "skip" };
  var NEXT = { j: 1, ArrowRight: 1, ArrowDown: 1, k: -1, ArrowLeft: -1, ArrowUp: -1 };

  function typing(el) {
    if (!el) return false;
    var tag = (el.tagName || "").toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || el.isContentEditable;
  }

  document.addEventListener("keydown", function (ev) {
    if (!document.getElementById("review-root")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) return;
    if (typing(ev.target)) return;
    var dc = window.dash_clientside;
    if (!dc || !dc.set_props) return;
    var now = Date.now();
    var key = ev.key;
    if (VERDICTS[key]) {
      var saving = document.getElementById("saving");
      if (saving) saving.style.display = "inline";
      dc.set_props("key-verdict", { data: { v: VERDICTS[key], t: now } });
    } else if (NEXT[key]) {
      dc.set_props("key-nav", { data: { dir: NEXT[key], t: now } });
    } else if (/^[1-9]$/.test(key)) {
      dc.set_props("key-dim", { data: { n: parseInt(key, 10), t: now } });
    } else if (key === "Tab") {
      dc.set_props("key-dim", { data: { tab: ev.shiftKey ? -1 : 1, t: now } });
    } else {
      return;
    }
    ev.preventDefault();
  });
})();
