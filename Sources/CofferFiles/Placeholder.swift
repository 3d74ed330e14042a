public enum CofferFilesPlaceholder {}
