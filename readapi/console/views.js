// Which view a signed-in reader sees, from the URL hash: the board (no hash), a patient
// (#patient/<id>) or the alarm burden (#burden). Back and forward work as in any page.
"use strict";
const VIEWS = ["board", "patient", "burden"];

function showView() {
  const signedIn = Boolean(sessionStorage.getItem("vitals.readerKey"));
  $("views").hidden = !signedIn;
  if (!signedIn) { $("patient").hidden = true; $("burden").hidden = true; return; }
  const match = location.hash.match(/^#patient\/(.+)$/);
  const view = match ? "patient" : location.hash === "#burden" ? "burden" : "board";
  for (const id of VIEWS) $(id).hidden = id !== view;
  if (view === "patient") openPatient(decodeURIComponent(match[1]));
  if (view === "burden") openBurden();
}
window.addEventListener("hashchange", showView);
showView(); // after console.js: a page opened at #patient/<id> or #burden
