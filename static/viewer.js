// Switch the result picture between its views without leaving the page.
(function () {
  "use strict";
  // Forms that ask first (no inline handlers: the Content-Security-Policy allows none).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  const viewer = document.getElementById("viewer");
  if (!viewer) return;
  for (const link of document.querySelectorAll("nav.views a[data-src]")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      viewer.src = link.dataset.src;
      for (const other of document.querySelectorAll("nav.views a")) other.removeAttribute("aria-current");
      link.setAttribute("aria-current", "true");
    });
  }
})();
