// The API explorer: Swagger UI from the swagger-ui-bundle package, started from this file
// (no inline script, so the page keeps the same content security policy as every other).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
  });
});
