/**
 * Node options each role's process starts with: `npm start`, and the projector's
 * runs in `npm run bench:kafka`, so that the benchmark measures the role as it runs.
 * The roles that stream events allocate many short-lived objects per event and keep
 * a batch or two of them alive across awaits, so their young generation is larger
 * than the default: 32 MiB per semi-space halved their garbage collection. Larger
 * did not pay: 64 and 128 were slower for the relay, and the projector in a process
 * of its own ran the same at 64 as at 32 (three rounds in turn; see
 * docs/design-decisions.md). package.json's `start:*` scripts and docker-compose.yml
 * give the same options.
 */
export const roleNodeOptions: Readonly<Record<string, readonly string[]>> = {
  projector: ['--max-semi-space-size=32'],
  relay: ['--max-semi-space-size=32'],
};
