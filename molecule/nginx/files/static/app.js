// nnp test page script: served by nginx from the static root, never by the backend.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const canvas = document.getElementById("chart");
  const context = canvas.getContext("2d");
  const points = [0.9, 0.7, 0.52, 0.41, 0.33, 0.28, 0.25, 0.23, 0.22, 0.21];
  context.beginPath();
  points.forEach((loss, step) => {
    const x = (step / (points.length - 1)) * canvas.width;
    const y = loss * canvas.height;
    if (step === 0) {
      context.moveTo(x, y);
    } else {
      context.lineTo(x, y);
    }
  });
  context.stroke();
});
