import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventContractText, eventSchemaFile } from '../shared/event-contract.js';

/**
 * `npm run docs:events`: writes the JSON Schema of the users topic's messages
 * (docs/events/users.events.v1.schema.json) from the schemas in the code. A test
 * fails while the checked-in file differs, so run this after changing an event.
 */
const file = fileURLToPath(new URL(`../${eventSchemaFile}`, import.meta.url));
await mkdir(dirname(file), { recursive: true });
await writeFile(file, eventContractText());
console.log(`wrote ${eventSchemaFile}`);
