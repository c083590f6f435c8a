// Draft review: the transcript follows the audio and a click on a word seeks to it.
// Word timings come from Vosk (seconds, data-start / data-end); nothing here talks to the server
// except the <audio> element itself, whose Range requests the server logs.
(function () {
  "use strict";
  var player = document.getElementById("player");
  var transcript = document.getElementById("transcript");
  if (!player || !transcript) { return; }
  var words = Array.prototype.slice.call(transcript.querySelectorAll(".w"));
  var current = null;

  function seek(seconds) {
    var go = function () {
      player.currentTime = seconds;
      var p = player.play();
      if (p && p.catch) { p.catch(function () { /* autoplay refused: the position is set anyway */ }); }
    };
    if (player.readyState >= 1) { go(); } else { player.addEventListener("loadedmetadata", go, { once: true }); player.load(); }
  }

  transcript.addEventListener("click", function (ev) {
    var w = ev.target.closest(".w");
    if (w) { seek(parseFloat(w.dataset.start)); }
  });

  player.addEventListener("timeupdate", function () {
    var t = player.currentTime, found = null;
    for (var i = 0; i < words.length; i++) {
      if (t >= parseFloat(words[i].dataset.start) && t < parseFloat(words[i].dataset.end)) { found = words[i]; break; }
    }
    if (found !== current) {
      if (current) { current.classList.remove("current"); }
      if (found) { found.classList.add("current"); }
      current = found;
    }
  });
}());
