/**
 * What the notebook picker sends to a kernel to route its cells, and what it keeps in the
 * notebook's metadata. Kept apart from the picker's UI so it can be checked on its own.
 */

/** The notebook metadata key; its value is `{target, workspace}`. */
export const METADATA_KEY = 'jupyter_compute';

/** The name that routes cells back to the notebook's own kernel. */
export const LOCAL = 'local';

export interface IRouteMetadata {
  target: string;
  workspace?: string;
}

/** Target names and workspace ids that can be put on a magic's line as they are. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/**
 * Loads the magics; run only when the probe says they are not loaded yet. Called directly rather
 * than with `%load_ext`, so a `%load_ext jupyter_compute` the person types later is quiet (IPython
 * would say "already loaded").
 */
export const LOAD_CODE =
  'import jupyter_compute as _jc; _jc.load_ipython_extension(get_ipython()); del _jc';

/** Whether the kernel has the `%compute` magic, asked without running a cell. */
export const PROBE_EXPRESSION =
  "'compute' in get_ipython().magics_manager.magics['line']";

/**
 * The magic that routes the kernel's cells to `name`. It is sent on its own: once a route is
 * active the magics send every cell elsewhere except those that start with `%compute`.
 * Names come from notebook metadata too, which anyone may have written: anything but a
 * plain name is refused, never run.
 */
export function routeCode(name: string, workspace: string): string {
  if (!SAFE_NAME.test(name)) {
    throw new Error(`'${name}' is not a valid target name`);
  }
  if (name === LOCAL) {
    return '%compute use local';
  }
  if (workspace && !SAFE_NAME.test(workspace)) {
    throw new Error(`'${workspace}' is not a valid workspace id`);
  }
  const ws =
    workspace && workspace !== 'local' ? ` --workspace ${workspace}` : '';
  // Said so that the cells' messages name the toolbar and the Compute panel, not the magic.
  return `%compute use ${name}${ws} --routed-by toolbar`;
}

/**
 * The target the kernel's cells go to now, asked without running a cell: `local` when the
 * magics are not loaded or no route is active.
 */
export const ROUTE_EXPRESSION =
  "(__import__('sys').modules['jupyter_compute.notebook.magics'].active_route() or (None, 'local'))[1] " +
  "if 'compute' in get_ipython().magics_manager.magics['line'] else 'local'";

/** The target name in a user expression's answer (`'name'`, a Python string's repr). */
export function parseRouteAnswer(answer: unknown): string | null {
  const a = answer as {
    status?: string;
    data?: Record<string, unknown>;
  } | null;
  if (!a || a.status !== 'ok') {
    return null;
  }
  const text = a.data?.['text/plain'];
  if (typeof text !== 'string') {
    return null;
  }
  const match = /^(['"])(.*)\1$/.exec(text.trim());
  const name = match ? match[2] : null;
  return name && SAFE_NAME.test(name) ? name : null;
}
