import { Worker } from 'node:worker_threads';

/**
 * Starts `<name>.worker.ts` (or `.js` in the build) beside `baseUrl` on a worker
 * thread. Under a TypeScript loader (tsx: tests and `npm start`) a worker does not
 * inherit the loader's hooks on Node 20, so a two-line bootstrap registers it
 * before importing the module; the build starts the compiled module directly.
 */
export function startWorkerModule(name: string, baseUrl: string, workerData: unknown): Worker {
  const moduleUrl = new URL(`./${name}.worker${baseUrl.endsWith('.ts') ? '.ts' : '.js'}`, baseUrl);
  if (!moduleUrl.pathname.endsWith('.ts')) return new Worker(moduleUrl, { workerData });
  const tsx = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(moduleUrl.href)}); })`;
  return new Worker(bootstrap, { eval: true, workerData });
}
