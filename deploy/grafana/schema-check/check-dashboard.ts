// Type-checks the provisioned dashboard against Grafana's published dashboard schema
// (@grafana/schema, the TypeScript generated from Grafana's CUE "dashboard" kind).
//
//   npx tsc -p deploy/grafana/schema-check        (no output, exit 0 = the JSON conforms)
//
// A JSON import types every string as `string`, never as a literal, so string enums and literal
// unions in the schema (FieldColorModeId, ThresholdsMode, VariableType, 'row', ...) could never
// match. JsonOf<> widens exactly those to `string`; everything else (structure, required fields,
// numbers, booleans, arrays, nullability) is checked as Grafana declares it.
import type { Dashboard } from '@grafana/schema';
import dashboard from '../dashboards/esgd.json';

type JsonOf<T> = T extends string
  ? string
  : T extends ReadonlyArray<infer U>
    ? Array<JsonOf<U>>
    : T extends object
      ? { [K in keyof T]: JsonOf<T[K]> }
      : T;

export const checked: JsonOf<Dashboard> = dashboard;
