// The dashboard's only script of its own. It draws each page's charts from the page's `.json`
// twin (the body's data-twin), switches light/dark, and copies a shown secret. Text reaches
// ECharts as data only, and tooltips render on the canvas (richText), never as HTML.
(function () {
  "use strict";

  var THEME_COOKIE = "tm_theme";

  function isDark() {
    var chosen = document.documentElement.dataset.theme;
    if (chosen === "dark" || chosen === "light") {
      return chosen === "dark";
    }
    return window.matchMedia("(prefers-color-scheme: dark)").matches;
  }

  function language() {
    return document.body.dataset.lang || "en";
  }

  function hourLabel(iso) {
    var format = new Intl.DateTimeFormat(language(), {
      month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit",
      hour12: false, timeZone: "UTC"
    });
    return format.format(new Date(iso));
  }

  function base() {
    return {
      animation: false,
      backgroundColor: "transparent",
      tooltip: { trigger: "axis", renderMode: "richText" },
      grid: { left: 48, right: 48, top: 36, bottom: 36, containLabel: true },
      legend: { top: 0 }
    };
  }

  function lineSeries(name, values, axis) {
    return { name: name, type: "line", showSymbol: false, yAxisIndex: axis || 0, data: values };
  }

  var builders = {
    "usage-trend": function (data, labels) {
      var points = data.hourly_usage;
      var option = base();
      option.xAxis = { type: "category", data: points.map(function (p) { return hourLabel(p.hour); }) };
      option.yAxis = [
        { type: "value", name: labels.calls, minInterval: 1 },
        { type: "value", name: "ms" }
      ];
      option.series = [
        lineSeries(labels.calls, points.map(function (p) { return p.call_count; }), 0),
        lineSeries(labels.avg, points.map(function (p) { return p.avg_response_time; }), 1),
        lineSeries(labels.p95, points.map(function (p) { return p.p95_response_time; }), 1)
      ];
      return option;
    },
    "token-trend": function (data, labels) {
      // LLM tokens per hour (or day), prompt and completion stacked.
      var points = data.hourly_usage;
      var option = base();
      option.xAxis = { type: "category", data: points.map(function (p) { return hourLabel(p.hour); }) };
      option.yAxis = { type: "value", minInterval: 1 };
      option.series = [
        { name: labels.prompt, type: "bar", stack: "tokens",
          data: points.map(function (p) { return p.prompt_tokens; }) },
        { name: labels.completion, type: "bar", stack: "tokens",
          data: points.map(function (p) { return p.completion_tokens; }) }
      ];
      return option;
    },
    "dashboard-trend": function (data, labels) {
      var points = data.trend.hourly_usage;
      var option = base();
      option.legend = { show: false };
      option.xAxis = { type: "category", data: points.map(function (p) { return hourLabel(p.hour); }) };
      option.yAxis = { type: "value", minInterval: 1 };
      option.series = [lineSeries(labels.calls, points.map(function (p) { return p.call_count; }))];
      option.series[0].areaStyle = {};
      return option;
    },
    "route-share": function (data, labels) {
      var option = base();
      option.tooltip = { trigger: "item", renderMode: "richText" };
      option.series = [{
        name: labels.calls,
        type: "pie",
        radius: ["35%", "65%"],
        label: { formatter: "{b}: {d}%" },
        data: data.route_shares.map(function (s) { return { name: s.route_path, value: s.call_count }; })
      }];
      return option;
    },
    "token-routes": function (data, labels) {
      var rows = data.route_distribution;
      var option = base();
      option.legend = { show: false };
      option.yAxis = { type: "category", inverse: true,
        data: rows.map(function (r) { return r.route_path || "–"; }) };
      option.xAxis = { type: "value", minInterval: 1 };
      option.series = [{ name: labels.calls, type: "bar",
        data: rows.map(function (r) { return r.call_count; }) }];
      return option;
    },
    "token-heatmap": function (data, labels) {
      var matrix = data.time_profile.calls;
      var cells = [];
      var most = 0;
      matrix.forEach(function (row, day) {
        row.forEach(function (count, hour) {
          cells.push([hour, day, count]);
          most = Math.max(most, count);
        });
      });
      var option = base();
      option.tooltip = { trigger: "item", renderMode: "richText" };
      option.grid = { left: 48, right: 16, top: 16, bottom: 64, containLabel: true };
      option.xAxis = { type: "category", data: Array.from({ length: 24 }, function (_, h) { return String(h); }) };
      option.yAxis = { type: "category", data: labels.weekdays };
      option.visualMap = { min: 0, max: Math.max(most, 1), calculable: false, orient: "horizontal",
        left: "center", bottom: 0 };
      option.series = [{ name: labels.calls, type: "heatmap", data: cells }];
      return option;
    },
    "route-tokens": function (data, labels) {
      var rows = data.token_distribution;
      var option = base();
      option.legend = { show: false };
      option.yAxis = { type: "category", inverse: true,
        data: rows.map(function (r) { return r.name; }) };
      option.xAxis = { type: "value", minInterval: 1 };
      option.series = [{ name: labels.calls, type: "bar",
        data: rows.map(function (r) { return r.usage_count; }) }];
      return option;
    },
    "finding-evidence": function (data, labels, element) {
      // One finding's observed figure beside the baseline it was compared with.
      var id = Number(element.dataset.finding);
      var finding = data.findings.filter(function (f) { return f.id === id; })[0];
      var bars = finding ? finding.evidence_chart : [];
      var option = base();
      option.legend = { show: false };
      option.tooltip = { trigger: "item", renderMode: "richText" };
      option.grid = { left: 8, right: 8, top: 16, bottom: 8, containLabel: true };
      option.xAxis = { type: "category", data: bars.map(function (b) { return labels[b.key] || b.key; }) };
      option.yAxis = { type: "value" };
      option.series = [{ name: labels.value, type: "bar",
        data: bars.map(function (b) { return b.value; }) }];
      return option;
    },
    "route-latency": function (data, labels) {
      var points = data.latency_trend;
      var option = base();
      option.xAxis = { type: "category", data: points.map(function (p) { return hourLabel(p.hour); }) };
      option.yAxis = { type: "value", name: "ms" };
      option.series = [
        lineSeries(labels.p50, points.map(function (p) { return p.p50_response_time; })),
        lineSeries(labels.p95, points.map(function (p) { return p.p95_response_time; }))
      ];
      return option;
    }
  };

  var twinData = null;

  function drawCharts() {
    var theme = isDark() ? "dark" : null;
    document.querySelectorAll("[data-chart]").forEach(function (element) {
      var existing = window.echarts.getInstanceByDom(element);
      if (existing) {
        existing.dispose();
      }
      var build = builders[element.dataset.chart];
      var labels = JSON.parse(element.dataset.labels || "{}");
      var chart = window.echarts.init(element, theme, { renderer: "canvas" });
      chart.setOption(build(twinData, labels, element));
    });
    document.body.dataset.chartsReady = "true";
  }

  function loadCharts() {
    var twin = document.body.dataset.twin;
    if (!twin || !document.querySelector("[data-chart]")) {
      return;
    }
    fetch(twin, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("chart data: HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        twinData = data;
        drawCharts();
      })
      .catch(function (error) {
        console.error(error);
      });
  }

  function toggleTheme() {
    var next = isDark() ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    document.cookie = THEME_COOKIE + "=" + next + "; path=/; max-age=31536000; samesite=lax";
    if (twinData) {
      drawCharts();
    }
  }

  function copySecret(button) {
    var source = document.getElementById(button.dataset.copy);
    if (!source || !navigator.clipboard) {
      return;
    }
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      button.textContent = button.dataset.copied;
    }, function () {
      // No clipboard permission: the secret stays selectable on the page.
    });
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest("button");
    if (!target) {
      return;
    }
    if (target.id === "theme-toggle") {
      toggleTheme();
    } else if (target.dataset.copy) {
      copySecret(target);
    }
  });

  window.addEventListener("resize", function () {
    document.querySelectorAll("[data-chart]").forEach(function (element) {
      var chart = window.echarts.getInstanceByDom(element);
      if (chart) {
        chart.resize();
      }
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    loadCharts();
  });
}());
