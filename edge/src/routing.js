// Longest-prefix route matching, as in tokenmanager/routes/matching.py: a prefix matches a path
// equal to it or continuing it at a `/` boundary; the longest matching prefix wins.

export function prefixMatches(prefix, path) {
  if (prefix === "/") return path.startsWith("/");
  return path === prefix || (path.startsWith(prefix) && path[prefix.length] === "/");
}

/** The route whose `path_prefix` is the longest one matching `path`, or null. */
export function matchRoute(routes, path) {
  let best = null;
  for (const route of routes) {
    if (
      prefixMatches(route.path_prefix, path) &&
      (best === null || route.path_prefix.length > best.path_prefix.length)
    ) {
      best = route;
    }
  }
  return best;
}

/** True if every required scope is granted; `*` grants all, `name:*` grants `name:anything`. */
export function hasScopes(granted, required) {
  return required.every((scope) => hasScope(granted, scope));
}

function hasScope(granted, scope) {
  for (const g of granted) {
    if (g === "*" || g === scope) return true;
    if (g.endsWith(":*") && (scope.startsWith(g.slice(0, -1)) || scope === g.slice(0, -2))) {
      return true;
    }
  }
  return false;
}
