// Draws every <div class="chart" data-figure="..."> with the Plotly served by this app.
(function () {
  const config = { responsive: true, displaylogo: false, displayModeBar: false };
  for (const el of document.querySelectorAll(".chart[data-figure]")) {
    const figure = JSON.parse(el.dataset.figure);
    Plotly.newPlot(el, figure.data, figure.layout, config).then(() => {
      el.dataset.drawn = "true"; // the browser tests wait for this
    });
  }
})();
