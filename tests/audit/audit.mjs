// graphql-http's GraphQL-over-HTTP audit of the server at argv[2]: one JSON line per check.
import { auditServer } from 'graphql-http';

const results = await auditServer({ url: process.argv[2] });
for (const result of results) {
  console.log(JSON.stringify({ id: result.id, name: result.name, status: result.status, reason: result.reason ?? null }));
}
