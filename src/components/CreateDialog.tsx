/**
 * The create and attach dialogs: a kind picker and a form generated from the kind's JSON
 * Schema, validated as the user types, with the server's 400 shown next to the field it names.
 */
import * as React from 'react';

import type { IKind, ISize } from '../api';
import type { ComputeModel } from '../model';
import { ComputeApiError } from '../request';
import {
  FormErrors,
  FormValue,
  FormValues,
  IField,
  fieldForPointer,
  fieldsFromSchema,
  initialValues,
  toRequestBody,
  errorsOf,
  validateForm
} from '../schemaForm';
import { showModal } from './Modal';
import { PYTHON_FIELD, PythonPicker, usePythons } from './PythonPicker';
import { SchemaFields, fieldId } from './SchemaForm';
import {
  ACCEPT_FIELD,
  HostKeyStep,
  IHostKeyChallenge,
  KEY_FIELD,
  KeyFilePicker,
  SSH_KIND,
  hostKeyChallenge,
  keyProblem,
  useSshKeys
} from './SshAttach';

export type CreateMode = 'create' | 'attach';

/** The kinds a dialog offers: created kinds for create, attached kinds for attach. */
export function kindsFor(model: ComputeModel, mode: CreateMode): IKind[] {
  return Array.from(model.kinds.values()).filter(k =>
    mode === 'create'
      ? k.managed && !!k.create_schema && k.operations.includes('create')
      : !k.managed &&
        !!(k.attach_schema ?? k.create_schema) &&
        k.operations.includes('attach')
  );
}

function schemaOf(kind: IKind, mode: CreateMode) {
  return mode === 'create'
    ? kind.create_schema
    : (kind.attach_schema ?? kind.create_schema);
}

/** Show the dialog; resolves with the new target's name, or null when cancelled. */
export function showCreateDialog(
  model: ComputeModel,
  mode: CreateMode,
  kind?: string
): Promise<string | null> {
  const title =
    mode === 'create' ? 'Create a compute target' : 'Attach compute';
  return showModal<string>({
    title,
    className: 'jp-ComputeCreateDialog',
    body: close => (
      <CreateForm model={model} mode={mode} initialKind={kind} close={close} />
    )
  });
}

let formCounter = 0;

function CreateForm(props: {
  model: ComputeModel;
  mode: CreateMode;
  initialKind?: string;
  close: (name: string | null) => void;
}): JSX.Element {
  const { model, mode } = props;
  const kinds = React.useMemo(() => kindsFor(model, mode), [model, mode]);
  const [kindName, setKindName] = React.useState<string>(
    kinds.find(k => k.name === props.initialKind)?.name ?? kinds[0]?.name ?? ''
  );
  const kind = kinds.find(k => k.name === kindName);
  const isSsh = kind?.name === SSH_KIND;
  // Host keys are accepted in their own step, one shown fingerprint at a time, never typed here.
  const fields = React.useMemo<IField[]>(
    () =>
      kind
        ? fieldsFromSchema(schemaOf(kind, mode)).filter(
            f => !(isSsh && f.name === ACCEPT_FIELD)
          )
        : [],
    [kind, mode, isSsh]
  );
  const sshKeys = useSshKeys(model, isSsh);
  const isLocalKernel = kind?.name === 'local-kernel';
  const pythons = usePythons(model, isLocalKernel);
  // The step that shows a refused host key, and the fingerprints the user accepted so far.
  const [hostKey, setHostKey] = React.useState<IHostKeyChallenge | null>(null);
  const [accepted, setAccepted] = React.useState<string[]>([]);
  const [values, setValues] = React.useState<FormValues>(() =>
    initialValues(fields)
  );
  const [errors, setErrors] = React.useState<FormErrors>({});
  // The server's answers, kept until their field's value changes: checks done in the browser
  // (on typing, on leaving a field) cannot know them and must not hide them.
  const [serverErrors, setServerErrors] = React.useState<
    Record<string, { message: string; value: FormValue | undefined }>
  >({});
  const [touched, setTouched] = React.useState<Set<string>>(new Set());
  const [formError, setFormError] = React.useState<string>('');
  const [busy, setBusy] = React.useState(false);
  const [sizes, setSizes] = React.useState<ISize[] | null>(null);
  const idPrefix = React.useMemo(() => `jp-ComputeForm-${++formCounter}`, []);
  const workspace = model.workspace;
  // Names are read at each check: targets come and go while the dialog is open.
  const context = () => ({ takenNames: new Set(model.targets.keys()) });

  React.useEffect(() => {
    setValues(initialValues(fields));
    setErrors({});
    setServerErrors({});
    setTouched(new Set());
    setFormError('');
    setHostKey(null);
    setAccepted([]);
  }, [fields]);

  const needsSizes = fields.some(f => f.kind === 'size');
  React.useEffect(() => {
    if (!needsSizes) {
      return;
    }
    let live = true;
    model.api.listSizes(workspace).then(
      list => live && setSizes(list),
      () => live && setSizes(null)
    );
    return () => {
      live = false;
    };
  }, [needsSizes, model, workspace]);

  const onChange = (name: string, value: FormValue) => {
    const next = { ...values, [name]: value };
    setValues(next);
    // An accepted key belongs to the host it was shown for.
    setAccepted([]);
    // The field, once touched, is checked as it is typed; so is a max_X whose min_X changed.
    const partner = name.startsWith('min_') ? `max_${name.slice(4)}` : null;
    const check = [name, partner].filter(
      (n): n is string =>
        !!n &&
        (touched.has(n) || n === 'name' || !!errors[n] || n === partner) &&
        (n !== partner || String(next[n] ?? '').trim() !== '')
    );
    if (check.length) {
      const found = errorsOf(fields, next, check, context());
      setErrors(prev => {
        const copy = { ...prev };
        for (const [n, error] of Object.entries(found)) {
          if (error) {
            copy[n] = error;
          } else {
            delete copy[n];
          }
        }
        return copy;
      });
    }
    setFormError('');
  };

  const onBlur = (name: string) => {
    if (!touched.has(name)) {
      setTouched(new Set(touched).add(name));
    }
    const error = errorsOf(fields, values, [name], context())[name];
    if (error !== undefined) {
      setErrors(prev => {
        const copy = { ...prev };
        if (error) {
          copy[name] = error;
        } else {
          delete copy[name];
        }
        return copy;
      });
    }
  };

  const focusField = (name: string) => {
    requestAnimationFrame(() => {
      document.getElementById(fieldId(idPrefix, name))?.focus();
    });
  };

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    if (!kind || busy || hostKey) {
      return;
    }
    const found = validateForm(fields, values, context());
    const refusedKey = isSsh
      ? keyProblem(sshKeys.keys, String(values[KEY_FIELD] ?? ''))
      : null;
    if (refusedKey && !found[KEY_FIELD]) {
      found[KEY_FIELD] = refusedKey;
    }
    setErrors(found);
    setTouched(new Set(fields.map(f => f.name)));
    const firstInvalid = fields.find(f => found[f.name]);
    if (firstInvalid) {
      focusField(firstInvalid.name);
      return;
    }
    await send(accepted);
  };

  const send = async (acceptHostKeys: string[]) => {
    if (!kind) {
      return;
    }
    const body = toRequestBody(fields, values);
    const name = String(body.name);
    if (acceptHostKeys.length) {
      body[ACCEPT_FIELD] = acceptHostKeys;
    }
    setBusy(true);
    setFormError('');
    setServerErrors({});
    try {
      await model.createTarget({ ...body, name, kind: kind.name });
      props.close(name);
    } catch (error) {
      setBusy(false);
      const challenge = isSsh ? hostKeyChallenge(error) : null;
      if (challenge) {
        setHostKey(challenge);
        return;
      }
      setHostKey(null);
      const apiError =
        error instanceof ComputeApiError
          ? error
          : new ComputeApiError({
              message: String((error as Error)?.message ?? error),
              status: 0
            });
      const target = fieldForPointer(fields, apiError.field);
      if (target) {
        setServerErrors({
          [target]: { message: apiError.message, value: values[target] }
        });
        focusField(target);
      } else {
        setFormError(apiError.message);
      }
    }
  };

  if (kinds.length === 0) {
    return (
      <>
        <div className="jp-Dialog-body jp-ComputeForm">
          <p>
            {mode === 'create'
              ? `Workspace '${workspace}' has no kind of compute that can be created here.`
              : `Workspace '${workspace}' has no kind of compute that can be attached.`}
          </p>
        </div>
        <div className="jp-Dialog-footer">
          <div className="jp-Dialog-footerButtons">
            <button
              type="button"
              className="jp-Dialog-button jp-mod-styled jp-mod-accept"
              onClick={() => props.close(null)}
            >
              <div className="jp-Dialog-buttonLabel">Close</div>
            </button>
          </div>
        </div>
      </>
    );
  }

  const shown: FormErrors = { ...errors };
  for (const [field, error] of Object.entries(serverErrors)) {
    if (!shown[field] && values[field] === error.value) {
      shown[field] = error.message;
    }
  }
  const refusedKey = isSsh
    ? keyProblem(sshKeys.keys, String(values[KEY_FIELD] ?? ''))
    : null;
  if (refusedKey && !shown[KEY_FIELD]) {
    shown[KEY_FIELD] = refusedKey;
  }
  const verb = mode === 'create' ? 'Create' : 'Attach';
  return (
    <form
      className="jp-ComputeForm-form"
      onSubmit={submit}
      noValidate
      aria-busy={busy}
    >
      <div className="jp-Dialog-body jp-ComputeForm">
        {kinds.length > 1 ? (
          <div className="jp-ComputeForm-field">
            <label
              htmlFor={`${idPrefix}-kind`}
              className="jp-ComputeForm-label"
            >
              Kind
            </label>
            <select
              id={`${idPrefix}-kind`}
              className="jp-mod-styled jp-ComputeForm-input"
              value={kindName}
              disabled={busy}
              onChange={event => setKindName(event.target.value)}
            >
              {kinds.map(k => (
                <option key={k.name} value={k.name}>
                  {k.name} ({k.family})
                </option>
              ))}
            </select>
          </div>
        ) : null}
        {kind ? (
          <p className="jp-ComputeForm-kind">
            <strong>{kind.name}</strong> — {kind.description}
          </p>
        ) : null}
        {hostKey ? (
          <HostKeyStep
            challenge={hostKey}
            busy={busy}
            onBack={() => setHostKey(null)}
            onAccept={() => {
              const next = [...accepted, hostKey.fingerprint];
              setAccepted(next);
              void send(next);
            }}
          />
        ) : (
          <SchemaFields
            idPrefix={idPrefix}
            fields={fields}
            values={values}
            errors={shown}
            sizes={sizes}
            disabled={busy}
            onChange={onChange}
            onBlur={onBlur}
            controls={
              isSsh
                ? {
                    [KEY_FIELD]: control => (
                      <KeyFilePicker {...control} {...sshKeys} />
                    )
                  }
                : isLocalKernel
                  ? {
                      [PYTHON_FIELD]: control => (
                        <PythonPicker {...control} pythons={pythons} />
                      )
                    }
                  : undefined
            }
          />
        )}
        <div className="jp-ComputeForm-formError" role="alert">
          {formError}
        </div>
      </div>
      <div className="jp-Dialog-footer">
        <div className="jp-Dialog-footerButtons">
          <button
            type="button"
            className="jp-Dialog-button jp-mod-styled jp-mod-reject"
            onClick={() => props.close(null)}
          >
            <div className="jp-Dialog-buttonLabel">Cancel</div>
          </button>
          {hostKey ? null : (
            <button
              type="submit"
              className="jp-Dialog-button jp-mod-styled jp-mod-accept"
              disabled={busy}
            >
              <div className="jp-Dialog-buttonLabel">
                {busy ? `${verb.replace(/e$/, '')}ing…` : verb}
              </div>
            </button>
          )}
        </div>
      </div>
    </form>
  );
}
