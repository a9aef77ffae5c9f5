/**
 * The user settings of `schema/plugin.json`: their defaults, and how they are read from the
 * setting registry and followed as they change.
 */
import { ISettingRegistry } from '@jupyterlab/settingregistry';

export interface IComputeSettings {
  confirmDelete: boolean;
  confirmStop: boolean;
  defaultWorkspace: string;
  collapsedGroups: string[];
  offerRestore: boolean;
}

export const DEFAULT_SETTINGS: IComputeSettings = {
  confirmDelete: true,
  confirmStop: true,
  defaultWorkspace: '',
  collapsedGroups: [],
  offerRestore: true
};

/** The settings as they apply now; a value that is not set keeps its default. */
export function readSettings(
  settings: ISettingRegistry.ISettings
): IComputeSettings {
  const get = <T>(key: keyof IComputeSettings, fallback: T): T => {
    const value = settings.get(key).composite;
    return value === undefined || value === null ? fallback : (value as T);
  };
  return {
    confirmDelete: get('confirmDelete', DEFAULT_SETTINGS.confirmDelete),
    confirmStop: get('confirmStop', DEFAULT_SETTINGS.confirmStop),
    defaultWorkspace: get(
      'defaultWorkspace',
      DEFAULT_SETTINGS.defaultWorkspace
    ),
    collapsedGroups: get('collapsedGroups', DEFAULT_SETTINGS.collapsedGroups),
    offerRestore: get('offerRestore', DEFAULT_SETTINGS.offerRestore)
  };
}

/**
 * Load a plugin's settings, then hand them to `apply` now and after every change. Settings
 * that cannot be loaded are reported on the console and the defaults stay: the sidebar works
 * without them.
 */
export async function followSettings(
  registry: ISettingRegistry,
  pluginId: string,
  apply: (settings: IComputeSettings) => void
): Promise<void> {
  try {
    const settings = await registry.load(pluginId);
    const update = () => apply(readSettings(settings));
    update();
    settings.changed.connect(update);
  } catch (reason) {
    console.warn('jupyter_compute: settings could not be loaded', reason);
  }
}
