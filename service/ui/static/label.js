// Keys 1-4 (and s) press the vote buttons, except while typing in a text box.
// The buttons are disabled while a vote is in flight (htmx hx-disabled-elt) and replaced by the
// next pair afterwards, so a second press can never send a second vote for the same pair.
document.addEventListener("keydown", function (event) {
  var target = event.target;
  if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.isContentEditable)) {
    if (event.key === "Escape") target.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  var button = document.querySelector('#vote button[data-key="' + event.key.toLowerCase() + '"]');
  if (button && !button.disabled) {
    event.preventDefault();
    button.click();
  }
});

// A refused vote (e.g. 409: this labeler already answered differently, or a bad request) is not
// swapped in by htmx; show the server's message instead of failing silently.
document.addEventListener("htmx:responseError", function (event) {
  var box = document.getElementById("vote-error");
  if (!box) return;
  var message = "the vote was not recorded (HTTP " + event.detail.xhr.status + ")";
  try { message = JSON.parse(event.detail.xhr.responseText).error.message; } catch (e) { /* keep the default */ }
  box.textContent = message;
});
