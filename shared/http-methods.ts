import type { FastifyInstance } from 'fastify';

/** The order methods are listed in an `Allow` header. */
const methodOrder = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

/**
 * Whether a concrete path fits a route's path: static segments must be equal, a
 * segment with a parameter takes any non-empty text, `*` takes the rest.
 */
function pathMatcher(route: string): (path: string) => boolean {
  const pattern = route.split('/');
  return (path) => {
    const segments = path.split('/');
    for (const [i, part] of pattern.entries()) {
      if (part === '*') return true;
      const segment = segments[i];
      if (segment === undefined) return false;
      if (part.includes(':') ? segment === '' : segment !== part) return false;
    }
    return segments.length === pattern.length;
  };
}

/**
 * Records the methods of every route registered on `app` from now on (call it
 * before the routes), so that a request the router does not know can be told
 * apart: an unknown path (404) or a known path asked with a method it does not
 * have (405, with the methods it has). Returns those methods for a path, none
 * for an unknown one.
 */
export function routeMethods(app: FastifyInstance): (path: string) => string[] {
  const routes = new Map<string, { matches: (path: string) => boolean; methods: Set<string> }>();
  app.addHook('onRoute', (route) => {
    let entry = routes.get(route.url);
    if (!entry) routes.set(route.url, (entry = { matches: pathMatcher(route.url), methods: new Set() }));
    for (const method of [route.method].flat()) entry.methods.add(method.toUpperCase());
  });
  return (path) => {
    const allowed = new Set<string>();
    for (const { matches, methods } of routes.values()) if (matches(path)) for (const method of methods) allowed.add(method);
    const rank = (method: string) => (methodOrder.includes(method) ? methodOrder.indexOf(method) : methodOrder.length);
    return [...allowed].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  };
}
