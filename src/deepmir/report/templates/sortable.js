// Click a header of a table.sortable to sort its rows (numbers as numbers, n/a last).
function makeSortable(table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var up = th.dataset.order !== "up";
      th.dataset.order = up ? "up" : "down";
      function key(row) {
        var cell = row.cells[column];
        var text = cell ? (cell.dataset.sort || cell.textContent).trim() : "";
        var number = parseFloat(text);
        return isNaN(number) || !/^[-+]?[0-9.]/.test(text) ? text.toLowerCase() : number;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var missing = (x === "n/a" || x === "") - (y === "n/a" || y === "");
        if (missing) return missing;
        if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
}
document.querySelectorAll("table.sortable").forEach(makeSortable);
