/**
 * Forms from JSON Schema: the fields of a kind's create or attach spec, their inline
 * validation, and the request body they make. Kinds need no form code of their own.
 */
import type { JSONSchema7, JSONSchema7Definition } from 'json-schema';

/** How a field is edited. */
export type FieldKind =
  | 'text'
  | 'password'
  | 'integer'
  | 'number'
  | 'boolean'
  | 'choice'
  | 'size'
  | 'map'
  | 'list'
  | 'json';

export interface IField {
  /** The spec field's name, which is also the request body's key. */
  name: string;
  title: string;
  description: string;
  kind: FieldKind;
  required: boolean;
  /** Secrets are entered in password fields and never shown again. */
  secret: boolean;
  choices: (string | number)[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  /** The schema's default, as the form shows it. */
  default: FormValue;
  /** A value to show as an example ("e.g. …") while the field is empty. */
  example?: string;
}

/** A field's value as the form holds it: text for everything but check boxes. */
export type FormValue = string | boolean;
export type FormValues = Record<string, FormValue>;
export type FormErrors = Record<string, string>;

/** Names every kind shares (the server checks the same); a kind's schema may narrow them. */
export const NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_-]{0,62}$/;
export const RESERVED_NAMES: ReadonlySet<string> = new Set(['local']);

/** Fields every spec has, shown after the kind's own. */
const COMMON_LAST = ['description', 'tags'];

/**
 * The form's fields for a kind's schema, `name` first. A target always has a name, so one is
 * added when the schema has none, unless `withName` is false (forms for other things).
 */
export function fieldsFromSchema(
  schema: JSONSchema7 | null | undefined,
  withName = true
): IField[] {
  if (!schema || typeof schema !== 'object') {
    return withName ? [nameField(undefined, true)] : [];
  }
  const root = schema;
  const properties = root.properties ?? {};
  const required = new Set(root.required ?? []);
  const fields: IField[] = [];
  for (const [name, definition] of Object.entries(properties)) {
    if (name === 'kind') {
      continue;
    }
    const prop = resolve(root, definition);
    if (!prop) {
      continue;
    }
    if (name === 'name') {
      fields.push(nameField(prop, true));
      continue;
    }
    fields.push(toField(root, name, prop, required.has(name)));
  }
  if (withName && !fields.some(f => f.name === 'name')) {
    fields.unshift(nameField(undefined, true));
  }
  const rank = (f: IField): number =>
    f.name === 'name' ? 0 : COMMON_LAST.includes(f.name) ? 2 : 1;
  return fields
    .map((f, i) => ({ f, i }))
    .sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i)
    .map(({ f }) => f);
}

/** The values a new form starts with. */
export function initialValues(fields: IField[]): FormValues {
  const values: FormValues = {};
  for (const f of fields) {
    values[f.name] = f.default;
  }
  return values;
}

export interface IValidationContext {
  /** Names already used in the workspace. */
  takenNames?: ReadonlySet<string>;
}

/** The error of one field's value, or null when it is fine. */
export function validateField(
  field: IField,
  value: FormValue | undefined,
  context: IValidationContext = {}
): string | null {
  if (field.kind === 'boolean') {
    return null;
  }
  const text = typeof value === 'string' ? value.trim() : '';
  if (text === '') {
    return field.required ? `${field.title} is required` : null;
  }
  if (field.name === 'name') {
    if (RESERVED_NAMES.has(text.toLowerCase())) {
      return `'${text}' is reserved: it means the notebook's own kernel`;
    }
    if (!field.pattern && !NAME_PATTERN.test(text)) {
      return 'Start with a letter; use up to 63 letters, digits, - or _';
    }
    if (context.takenNames?.has(text)) {
      return `A target named '${text}' already exists`;
    }
  }
  switch (field.kind) {
    case 'integer':
    case 'number': {
      const n = Number(text);
      if (!Number.isFinite(n)) {
        return 'Enter a number';
      }
      if (field.kind === 'integer' && !Number.isInteger(n)) {
        return 'Enter a whole number';
      }
      if (field.minimum !== undefined && n < field.minimum) {
        return `Must be at least ${field.minimum}`;
      }
      if (field.maximum !== undefined && n > field.maximum) {
        return `Must be at most ${field.maximum}`;
      }
      if (field.exclusiveMinimum !== undefined && n <= field.exclusiveMinimum) {
        return `Must be more than ${field.exclusiveMinimum}`;
      }
      if (field.exclusiveMaximum !== undefined && n >= field.exclusiveMaximum) {
        return `Must be less than ${field.exclusiveMaximum}`;
      }
      return null;
    }
    case 'map': {
      const bad = parseMap(text).bad;
      return bad ? `Write one KEY=VALUE a line ('${bad}' has no =)` : null;
    }
    case 'json': {
      try {
        JSON.parse(text);
        return null;
      } catch {
        return 'Enter valid JSON';
      }
    }
    case 'choice':
    case 'size':
      if (field.choices.length && !field.choices.map(String).includes(text)) {
        return 'Choose one of the listed values';
      }
      return checkText(field, text);
    default:
      return checkText(field, text);
  }
}

/** Errors of every field; an empty object when the form can be sent. */
export function validateForm(
  fields: IField[],
  values: FormValues,
  context: IValidationContext = {}
): FormErrors {
  const errors: FormErrors = {};
  for (const f of fields) {
    const error =
      validateField(f, values[f.name], context) ??
      pairError(fields, values, f.name);
    if (error) {
      errors[f.name] = error;
    }
  }
  return errors;
}

/**
 * The request body for valid values: empty optional fields are left out, numbers parsed,
 * `KEY=VALUE` lines made into objects.
 */
export function toRequestBody(
  fields: IField[],
  values: FormValues
): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const f of fields) {
    const value = values[f.name];
    if (f.kind === 'boolean') {
      const checked = value === true;
      if (checked !== (f.default === true) || f.required) {
        body[f.name] = checked;
      }
      continue;
    }
    const text = typeof value === 'string' ? value.trim() : '';
    if (text === '') {
      continue;
    }
    switch (f.kind) {
      case 'integer':
      case 'number':
        body[f.name] = Number(text);
        break;
      case 'map':
        body[f.name] = parseMap(text).map;
        break;
      case 'list':
        body[f.name] = text
          .split(/[\n,]/)
          .map(s => s.trim())
          .filter(Boolean);
        break;
      case 'json':
        body[f.name] = JSON.parse(text);
        break;
      case 'choice': {
        const match = f.choices.find(c => String(c) === text);
        body[f.name] = match ?? text;
        break;
      }
      case 'password':
        // Secrets are sent as typed: spaces may be part of them.
        body[f.name] = value;
        break;
      default:
        body[f.name] = text;
    }
  }
  return body;
}

/**
 * The form field a server error points at: its JSON pointer's first segment
 * (`/env/FOO` → `env`), when the form has that field.
 */
export function fieldForPointer(
  fields: IField[],
  pointer: string | null | undefined
): string | null {
  if (!pointer || !pointer.startsWith('/')) {
    return null;
  }
  const first = pointer
    .slice(1)
    .split('/')[0]
    .replace(/~1/g, '/')
    .replace(/~0/g, '~');
  return fields.some(f => f.name === first) ? first : null;
}

/** Parse `KEY=VALUE` lines; `bad` is the first line without `=`. */
export function parseMap(text: string): {
  map: Record<string, string>;
  bad: string | null;
} {
  const map: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) {
      continue;
    }
    const eq = line.indexOf('=');
    if (eq <= 0) {
      return { map, bad: line };
    }
    map[line.slice(0, eq).trim()] = line.slice(eq + 1);
  }
  return { map, bad: null };
}

function checkText(field: IField, text: string): string | null {
  if (field.minLength !== undefined && text.length < field.minLength) {
    return `Use at least ${field.minLength} characters`;
  }
  if (field.maxLength !== undefined && text.length > field.maxLength) {
    return `Use at most ${field.maxLength} characters`;
  }
  if (field.pattern) {
    let re: RegExp | null = null;
    try {
      re = new RegExp(field.pattern, 'u');
    } catch {
      re = null;
    }
    if (re && !re.test(text)) {
      return `Does not match the required form (${field.pattern})`;
    }
  }
  return null;
}

function nameField(prop: JSONSchema7 | undefined, required: boolean): IField {
  const field = toField({}, 'name', prop ?? { type: 'string' }, required);
  field.title = prop?.title ?? 'Name';
  if (!field.description) {
    field.description =
      'Starts with a letter; letters, digits, - and _. "local" is reserved.';
  }
  field.kind = 'text';
  return field;
}

function toField(
  root: JSONSchema7,
  name: string,
  prop: JSONSchema7,
  required: boolean
): IField {
  // Pydantic writes optional fields as anyOf [X, null]: the field is X, and may be empty.
  const outer = prop;
  let inner = prop;
  const variants = (prop.anyOf ?? prop.oneOf ?? [])
    .map(v => resolve(root, v))
    .filter((v): v is JSONSchema7 => !!v && v.type !== 'null');
  if (variants.length === 1) {
    inner = { ...variants[0] };
  }
  const merged: JSONSchema7 = { ...inner, ...stripCombinators(outer) };
  const type = primaryType(merged.type ?? inner.type);
  const secret =
    merged.writeOnly === true ||
    merged.format === 'password' ||
    inner.writeOnly === true ||
    inner.format === 'password';
  let kind: FieldKind;
  const choices = (
    merged.enum ?? (merged.const !== undefined ? [merged.const] : [])
  ).filter(
    (c): c is string | number => typeof c === 'string' || typeof c === 'number'
  );
  if (secret) {
    kind = 'password';
  } else if (name === 'size' || merged.format === 'compute-size') {
    kind = 'size';
  } else if (choices.length > 0) {
    kind = 'choice';
  } else if (type === 'integer') {
    kind = 'integer';
  } else if (type === 'number') {
    kind = 'number';
  } else if (type === 'boolean') {
    kind = 'boolean';
  } else if (type === 'object') {
    const additional = resolve(root, merged.additionalProperties ?? true);
    kind =
      !merged.properties &&
      (!additional ||
        ['string', 'integer', 'number'].includes(String(additional.type)))
        ? 'map'
        : 'json';
  } else if (type === 'array') {
    const items = Array.isArray(merged.items)
      ? undefined
      : resolve(root, merged.items ?? true);
    kind = items && items.type === 'string' ? 'list' : 'json';
  } else {
    kind = 'text';
  }
  return {
    name,
    title: merged.title ?? humanLabel(name),
    description: merged.description ?? '',
    kind,
    required,
    secret,
    choices,
    minimum: merged.minimum,
    maximum: merged.maximum,
    exclusiveMinimum: merged.exclusiveMinimum,
    exclusiveMaximum: merged.exclusiveMaximum,
    minLength: merged.minLength,
    maxLength: merged.maxLength,
    pattern: merged.pattern,
    default: secret ? '' : defaultValue(kind, merged.default),
    example: secret ? undefined : exampleOf(merged.examples)
  };
}

/** The first example a schema gives, written as the form takes it. */
function exampleOf(examples: unknown): string | undefined {
  const first = Array.isArray(examples) ? examples[0] : undefined;
  if (first === undefined || first === null) {
    return undefined;
  }
  if (typeof first === 'object') {
    const entries = Object.entries(first as Record<string, unknown>);
    return entries.length
      ? entries.map(([k, v]) => `${k}=${v}`).join(', ')
      : undefined;
  }
  return String(first);
}

function stripCombinators(schema: JSONSchema7): JSONSchema7 {
  const copy: JSONSchema7 = { ...schema };
  delete copy.anyOf;
  delete copy.oneOf;
  if (copy.type === undefined) {
    delete copy.type;
  }
  return copy;
}

function primaryType(type: JSONSchema7['type']): string | undefined {
  if (Array.isArray(type)) {
    return type.find(t => t !== 'null');
  }
  return type;
}

function defaultValue(kind: FieldKind, value: unknown): FormValue {
  if (kind === 'boolean') {
    return value === true;
  }
  if (value === null || value === undefined) {
    return '';
  }
  if (kind === 'map' && typeof value === 'object' && !Array.isArray(value)) {
    return Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => `${k}=${String(v)}`)
      .join('\n');
  }
  if (kind === 'list' && Array.isArray(value)) {
    return value.map(String).join('\n');
  }
  if (kind === 'json') {
    return JSON.stringify(value, null, 2);
  }
  return String(value);
}

function resolve(
  root: JSONSchema7,
  definition: JSONSchema7Definition | undefined
): JSONSchema7 | null {
  if (definition === undefined || definition === false) {
    return null;
  }
  if (definition === true) {
    return {};
  }
  let current: JSONSchema7 = definition;
  for (let depth = 0; current.$ref && depth < 8; depth++) {
    const target = lookup(root, current.$ref);
    if (!target) {
      break;
    }
    const { $ref: _ignored, ...rest } = current;
    void _ignored;
    current = { ...target, ...rest };
  }
  return current;
}

function lookup(root: JSONSchema7, ref: string): JSONSchema7 | null {
  if (!ref.startsWith('#/')) {
    return null;
  }
  let node: unknown = root;
  for (const part of ref.slice(2).split('/')) {
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
    if (!node || typeof node !== 'object') {
      return null;
    }
    node = (node as Record<string, unknown>)[key];
  }
  return node && typeof node === 'object' ? (node as JSONSchema7) : null;
}

/** Words written as people write them. */
const WORDS: Record<string, string> = {
  ssh: 'SSH',
  url: 'URL',
  urls: 'URLs',
  ip: 'IP',
  id: 'ID',
  tls: 'TLS',
  vm: 'VM',
  cpu: 'CPU',
  cpus: 'CPUs',
  gpu: 'GPU',
  gpus: 'GPUs',
  api: 'API',
  ca: 'CA',
  pem: 'PEM',
  python: 'Python',
  jupyter: 'Jupyter',
  azure: 'Azure',
  kubernetes: 'Kubernetes'
};
/** A unit at a field name's end, and how a label says it. */
const UNITS: Record<string, string> = {
  mb: 'MB',
  gb: 'GB',
  minutes: 'minutes',
  seconds: 'seconds'
};
/** Field names whose label is not their words. */
const LABELS: Record<string, string> = {
  cwd: 'Working directory',
  env: 'Environment variables'
};

/** A field's label from its name: "memory_limit_mb" is "Memory limit (MB)". */
export function humanLabel(name: string): string {
  if (LABELS[name]) {
    return LABELS[name];
  }
  const words = name
    .split(/[_-]+/)
    .filter(Boolean)
    .map(w => w.toLowerCase());
  const unit = words.length > 1 ? UNITS[words[words.length - 1]] : undefined;
  if (unit) {
    words.pop();
  }
  const text = words.map(w => WORDS[w] ?? w).join(' ');
  const label = text.charAt(0).toUpperCase() + text.slice(1);
  return unit ? `${label} (${unit})` : label;
}

/** The error of `max_X` when `min_X` is more: as Scale says it, while typing. */
export function pairError(
  fields: IField[],
  values: FormValues,
  name: string
): string | null {
  if (!name.startsWith('max_')) {
    return null;
  }
  const low = fields.find(f => f.name === `min_${name.slice(4)}`);
  const lowText = low ? String(values[low.name] ?? '').trim() : '';
  const highText = String(values[name] ?? '').trim();
  if (!low || lowText === '' || highText === '') {
    return null;
  }
  const min = Number(lowText);
  const max = Number(highText);
  if (!Number.isFinite(min) || !Number.isFinite(max) || min <= max) {
    return null;
  }
  return `Must be at least ${low.title.toLowerCase()} (${min})`;
}

/**
 * The errors of `names` now, each field's own first and then its pair's (a change to `min_X`
 * is checked against `max_X` as well): `null` for a field that is fine.
 */
export function errorsOf(
  fields: IField[],
  values: FormValues,
  names: string[],
  context: IValidationContext = {}
): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const name of names) {
    const field = fields.find(f => f.name === name);
    if (!field) {
      continue;
    }
    out[name] =
      validateField(field, values[name], context) ??
      pairError(fields, values, name);
  }
  return out;
}
