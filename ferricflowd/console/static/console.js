// ferricflowd console: progressive enhancement only; every page works without this file.
(function () {
  "use strict";
  var chart = null;

  function series() {
    var el = document.getElementById("throughput-data");
    if (!el) return null;
    var d = JSON.parse(el.textContent);
    return [d.t, d.completed, d.failed];
  }

  function drawChart() {
    var box = document.getElementById("chart");
    var data = series();
    if (!box || !data || typeof uPlot === "undefined") return;
    if (chart) { chart.setData(data); return; }
    var opts = {
      width: Math.max(box.clientWidth, 300), height: 220,
      scales: { y: { range: function (u, min, max) { return [0, Math.max(max, 1) * 1.1]; } } },
      series: [
        {},
        { label: "completed / min", stroke: "#1b7f4b", fill: "rgba(27,127,75,0.08)", width: 2,
          points: { show: false } },
        { label: "failed / min", stroke: "#b42323", width: 2, points: { show: false } }
      ],
      axes: [{}, { size: 60 }]
    };
    chart = new uPlot(opts, data, box);
    window.addEventListener("resize", function () {
      chart.setSize({ width: Math.max(box.clientWidth, 300), height: 220 });
    });
  }

  function selectAll(ev) {
    var t = ev.target;
    if (!t.matches || !t.matches("input[data-select-all]")) return;
    var boxes = t.form.querySelectorAll('input[type=checkbox][name="' + t.dataset.selectAll + '"]');
    boxes.forEach(function (b) { b.checked = t.checked; });
  }

  document.addEventListener("DOMContentLoaded", drawChart);
  document.addEventListener("change", selectAll);
  document.addEventListener("htmx:afterSettle", drawChart);
})();
