// Switch the result picture between its views without leaving the page.
(function () {
  "use strict";
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
