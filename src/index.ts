/**
 * The plugins of jupyter_compute's JupyterLab extension: the Compute sidebar with its
 * commands and settings, and the notebook toolbar's target picker.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { ComputeApi } from './api';
import { registerCommands } from './commands';
import { ComputePanel } from './components/ComputePanel';
import { TargetDetails } from './components/DetailsView';
import { TargetPickerExtension } from './components/TargetPicker';
import {
  ComputeController,
  DEFAULT_SETTINGS,
  IComputeSettings
} from './controller';
import { computeIcon } from './icons';
import { ComputeModel } from './model';
import { IComputeService } from './tokens';

export { ComputeApi, ComputeApiError } from './api';
export { ComputeModel } from './model';
export { IComputeService } from './tokens';
export { CommandIDs } from './commands';

const PLUGIN_ID = 'jupyter-compute:plugin';

function readSettings(settings: ISettingRegistry.ISettings): IComputeSettings {
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

const sidebar: JupyterFrontEndPlugin<IComputeService> = {
  id: PLUGIN_ID,
  description:
    'The Compute sidebar: compute targets grouped by family, with live state.',
  autoStart: true,
  provides: IComputeService,
  optional: [ICommandPalette, ISettingRegistry, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null
  ): IComputeService => {
    const { serviceManager, shell } = app;
    const api = new ComputeApi({
      serverSettings: serviceManager.serverSettings
    });
    const model = new ComputeModel({
      api,
      events: serviceManager.events.stream,
      // Empty until the settings are read: then the server's default workspace is used.
      workspace: ''
    });

    const details = new Map<string, MainAreaWidget<TargetDetails>>();
    const controller = new ComputeController({
      model,
      openDetails: name => {
        const key = `${model.workspace}/${name}`;
        let widget = details.get(key);
        if (!widget || widget.isDisposed) {
          const content = new TargetDetails({
            model,
            controller,
            workspace: model.workspace,
            name
          });
          widget = new MainAreaWidget({ content });
          widget.id = `jupyter-compute-details-${encodeURIComponent(key)}`;
          widget.title.label = `Compute: ${name}`;
          widget.title.icon = computeIcon;
          widget.title.closable = true;
          details.set(key, widget);
          widget.disposed.connect(() => details.delete(key));
          shell.add(widget, 'main');
        }
        shell.activateById(widget.id);
      }
    });

    const panel = new ComputePanel({ model, controller });
    shell.add(panel, 'left', { rank: 600, type: 'Compute' });
    restorer?.add(panel, 'jupyter-compute-panel');
    registerCommands(app, panel, controller, palette);

    // The server went away: the model reconnects and fetches everything again.
    serviceManager.connectionFailure.connect((_, error) =>
      model.connectionLost(error)
    );

    const start = async () => {
      if (settingRegistry) {
        try {
          const settings = await settingRegistry.load(PLUGIN_ID);
          const apply = () => {
            controller.settings = readSettings(settings);
          };
          apply();
          settings.changed.connect(apply);
        } catch (reason) {
          console.warn('jupyter_compute: settings could not be loaded', reason);
        }
      }
      const { defaultWorkspace, collapsedGroups } = controller.settings;
      for (const family of collapsedGroups) {
        model.setCollapsed(family, true);
      }
      await model.refresh(defaultWorkspace || undefined);
      model.watchServer();
    };
    void app.restored.then(start);

    return { model, controller };
  }
};

const picker: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-compute:notebook-picker',
  description:
    "A notebook toolbar item choosing the target the notebook's cells run on.",
  autoStart: true,
  requires: [IComputeService],
  activate: (app: JupyterFrontEnd, service: IComputeService): void => {
    app.docRegistry.addWidgetExtension(
      'Notebook',
      new TargetPickerExtension(service.model, service.controller)
    );
  }
};

export default [sidebar, picker];
