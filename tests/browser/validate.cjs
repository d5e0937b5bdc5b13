// Validates a speedscope file against the schema shipped in the npm package
// speedscope (dist/release/file-format-schema.json), with ajv.
// Usage: node validate.cjs FILE   (NODE_PATH: the node_modules directory)
'use strict';
const fs = require('fs');
const path = require('path');
const Ajv = require('ajv');

const file = process.argv[2];
const schemaPath = path.join(
  path.dirname(require.resolve('speedscope/package.json')),
  'dist/release/file-format-schema.json');
const schema = JSON.parse(fs.readFileSync(schemaPath, 'utf8'));
const ajv = new Ajv({ allErrors: true, strict: false });
const validate = ajv.compile(schema);
const data = JSON.parse(fs.readFileSync(file, 'utf8'));
if (!validate(data)) {
  console.error(JSON.stringify(validate.errors.slice(0, 10), null, 1));
  process.exit(1);
}
console.log(JSON.stringify({ valid: true, schema: schemaPath }));
