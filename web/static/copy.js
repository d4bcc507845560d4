// Gives each shell command line on a page a Copy button. Browsers offer the clipboard only to secure pages
// (HTTPS or localhost); elsewhere no button is added and the line is still there to select.
(function () {
  "use strict";
  if (!navigator.clipboard) {
    return;
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("pre.cmdline").forEach(function (line) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = "Copy";
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(line.textContent).then(function () {
          button.textContent = "Copied";
        }, function () {
          button.textContent = "Copy failed";
        });
      });
      line.after(button);
    });
  });
})();
